"""The server of ``bodycam-hq serve``: uvicorn (h11) running ``hq.asgi`` over TLS, or plain HTTP on
loopback behind a TLS-terminating proxy (``--behind-proxy``).

What uvicorn does not do is done here, in its HTTP protocol class: a cap on open connections in
all and per source address (a connection over either is closed as soon as it is made, before a
byte of it is read), and one overall deadline for each request's line, headers and body (a
client trickling bytes cannot hold a connection longer than that; ingest after the body is not
bounded by it). TLS handshakes are bounded by asyncio's handshake timeout (60 s).

``HqServer`` binds its socket when made (its port is known at once), serves on whichever thread
calls ``serve_forever``, and stops on ``shutdown``: no new connections, idle ones closed, requests
in flight finish (``drain``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import ssl
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from hq.asgi import AppSettings, HqApp
from hq.guard import Origins, loopback_origins
from hq.limits import ConnectionLimits, LimitSettings
from hq.metrics import Metrics
from hq.ops_room import OpsRoom, OpsSettings
from hq.service import HqService
from hq.web.context import WebSettings

log = logging.getLogger(__name__)

# The TLS handshake is bounded by asyncio (60 s); a request's line, headers and body each in all:
# a 4 MiB chunk at about 280 kbit/s. Ingest after the body is not bounded by it.
REQUEST_DEADLINE_S = 120.0
KEEP_ALIVE_S = 15  # an idle keep-alive connection is closed after this
MAX_HEADER_BYTES = 64 * 1024  # request line and headers, as http.server allowed before
DRAIN_TIMEOUT_S = 60


class ListenError(ValueError):
    """A listen address that is malformed, or not loopback without --allow-remote."""


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` into (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ListenError(f"--listen {text!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    """True if every address ``host`` resolves to is a loopback address."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror:
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(str(a).split("%")[0]).is_loopback for a in addresses)


def check_listen(host: str, allow_remote: bool) -> None:
    if not allow_remote and not is_loopback(host):
        raise ListenError(
            f"refusing to listen on {host!r}: not a loopback address. Units reach headquarters through "
            "a deliberate deployment; pass --allow-remote to listen beyond this host"
        )


class _Deadline:
    """Aborts a connection whose request has not fully arrived ``seconds`` after it began."""

    def __init__(self, loop: asyncio.AbstractEventLoop, seconds: float, transport: asyncio.Transport) -> None:
        self._handle = loop.call_later(seconds, self._cut, transport, seconds)

    @staticmethod
    def _cut(transport: asyncio.Transport, seconds: float) -> None:
        peer = transport.get_extra_info("peername")
        log.info("%s: request not received within %.1f s; connection closed", peer[0] if peer else "?", seconds)
        transport.abort()

    def cancel(self) -> None:
        self._handle.cancel()


class HqProtocol(H11Protocol):
    """uvicorn's h11 protocol with connection caps and a per-request deadline (set per server)."""

    limits: ConnectionLimits
    metrics: Metrics
    deadline_s: float

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._source: str | None = None
        self._deadline: _Deadline | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        peer = transport.get_extra_info("peername")
        source = str(peer[0]) if isinstance(peer, tuple) else "local"
        refused = self.limits.admit(source)
        if refused is not None:
            log.info("%s: connection refused: %s", source, refused)
            self.metrics.connection_refused()
            transport.abort()
            return
        self._source = source
        super().connection_made(transport)
        self._deadline = _Deadline(self.loop, self.deadline_s, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._source is None:
            return
        self.limits.release(self._source)
        self._source = None
        self._stop_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._source is None:
            return
        if self._deadline is None and self.conn.their_state is h11.IDLE:
            self._deadline = _Deadline(self.loop, self.deadline_s, self.transport)
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE and self.conn.their_state is not h11.SEND_BODY:
            self._stop_deadline()  # the request is in (or the connection is ending)

    def _stop_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None


def parse_unix_listen(text: str) -> Path | None:
    """``unix:/run/bodycam-hq/hq.sock`` into its path; None for a ``HOST:PORT``."""
    if not text.startswith("unix:"):
        return None
    path = Path(text[len("unix:"):])
    if not path.is_absolute():
        raise ListenError(f"--listen {text!r}: a Unix socket needs an absolute path (unix:/run/bodycam-hq/hq.sock)")
    return path


def bind(address: tuple[str, int] | Path) -> socket.socket:
    """A listening socket on ``address`` (TCP, or a Unix socket at a path)."""
    if isinstance(address, Path):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if address.is_socket():
            address.unlink()  # left by a node that stopped; the serve lock says none runs now
    else:
        sock = socket.socket(socket.AF_INET6 if ":" in address[0] else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(str(address) if isinstance(address, Path) else address)
        if isinstance(address, Path):
            address.chmod(0o660)  # the proxy's group reaches it (a drop-in's SupplementaryGroups)
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    return sock


def _protocol_class(limits: ConnectionLimits, metrics: Metrics, deadline_s: float) -> type[HqProtocol]:
    return type("BoundHqProtocol", (HqProtocol,), {"limits": limits, "metrics": metrics, "deadline_s": deadline_s})


class HqServer:
    """One node's listener: a bound socket, uvicorn on it, and the app around ``service``."""

    def __init__(
        self,
        address: tuple[str, int] | Path | socket.socket,
        service: HqService,
        tls: ssl.SSLContext | None,
        request_deadline_s: float = REQUEST_DEADLINE_S,
        origins: Sequence[str] = (),
        limits: LimitSettings | None = None,
        behind_proxy: bool = False,
        metrics: Metrics | None = None,
        ops: OpsSettings | None = None,
        web: WebSettings | None = None,
    ) -> None:
        self.service = service
        # The operations room of this process (alerts, live updates, basemap): built first, so
        # the app serves it; its streams end when the server stops (``shutdown``).
        self.ops = OpsRoom(service, ops)
        self.limits = limits or LimitSettings()
        self.metrics = metrics or Metrics()
        self.socket = address if isinstance(address, socket.socket) else bind(address)
        self.origins = Origins(origins or loopback_origins(self.port))
        self.app = HqApp(service, AppSettings(self.origins, behind_proxy, self.limits, web or WebSettings()),
                         self.metrics, ops=self.ops)
        self.connections = ConnectionLimits(self.limits.max_connections, self.limits.max_per_source)
        config = uvicorn.Config(
            self.app.asgi,
            http=_protocol_class(self.connections, self.metrics, request_deadline_s),
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            date_header=True,
            timeout_keep_alive=KEEP_ALIVE_S,
            timeout_graceful_shutdown=DRAIN_TIMEOUT_S,
            h11_max_incomplete_event_size=MAX_HEADER_BYTES,
            ssl_context_factory=(lambda _config, _default: tls) if tls is not None else None,
        )
        self._uvicorn = uvicorn.Server(config)
        self._started = False
        self._stopped = threading.Event()

    @property
    def port(self) -> int:
        """The TCP port listened on (0 on a Unix socket)."""
        name = self.socket.getsockname()
        return int(name[1]) if isinstance(name, tuple) else 0

    def serve_forever(self) -> None:
        """Serve until ``shutdown``; requests in flight finish first (up to DRAIN_TIMEOUT_S)."""
        self._started = True
        try:
            asyncio.run(self._serve())
        finally:
            self._stopped.set()

    async def _serve(self) -> None:
        flush = asyncio.get_running_loop().create_task(self._flush_refusals())
        try:
            await self._uvicorn.serve(sockets=[self.socket])
        finally:
            flush.cancel()
            await asyncio.to_thread(self.service.refusals.flush)

    async def _flush_refusals(self) -> None:
        while True:
            await asyncio.sleep(1)
            await asyncio.to_thread(self.service.refusals.flush_due)
            self.metrics.refresh()

    def shutdown(self) -> None:
        """Stop accepting; ``serve_forever`` returns once requests in flight are answered (live
        streams of the operations room are ended first, and open request polls answer at once:
        they would otherwise never finish or hold the drain)."""
        self.ops.close()
        self.app.close()
        self._uvicorn.should_exit = True

    def drain(self, timeout_s: float) -> bool:
        """Wait until the server has stopped; False if ``timeout_s`` passed or a request was cut."""
        return self._stopped.wait(timeout_s) and self.app.in_flight == 0

    def server_close(self) -> None:
        """Close the listening socket (once a running server has stopped)."""
        self.ops.close()
        if self._started:
            self.app.close()
            self._uvicorn.should_exit = True
            self._stopped.wait(DRAIN_TIMEOUT_S + 5)
        with contextlib.suppress(OSError):
            self.socket.close()
