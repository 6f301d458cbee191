"""The HTTPS server of ``bodycam-hq serve``: stdlib ``ThreadingHTTPServer`` wrapped in TLS.

Why the standard library and not an ASGI framework: the API is six routes with small bodies
(a 4 MiB chunk at most), the unit count per service is in the hundreds, and every dependency
in the evidence path is something to audit, patch and get certified; ``http.server`` plus
``ssl`` (OpenSSL, TLS 1.2 and later only) does the job with nothing to add. What it lacks is
done here: a bounded body read, a TLS handshake in the worker thread rather than the accept
loop (a client that connects and stalls cannot block others), a socket timeout, an overall
deadline for the handshake and for reading each request (a client trickling bytes cannot hold a
thread longer than that), and a drain of in-flight requests on shutdown.

Left for the ASGI rewrite: a cap on connections (per server and per peer), so that many
slow clients together cannot exhaust threads within their deadlines.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from agent.evidence.httpsig import COVERED_FIELDS
from agent.sync.deadline import Deadline
from hq.errors import ApiError
from hq.service import HqService, Response, error_response
from hq.tus import TUS_VERSION

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 30.0  # any one read or write
# The TLS handshake, and a request's line, headers and body, each in all: a 4 MiB chunk at about
# 280 kbit/s. Ingest after the body is not bounded by it (headquarters' own work).
REQUEST_DEADLINE_S = 120.0
# Headers that must appear at most once: a second copy could make the two ends sign different bases.
SINGLE_HEADERS = (
    "Host",
    "Content-Length",
    "Content-Type",
    "Content-Digest",
    "Signature",
    "Signature-Input",
    "Tus-Resumable",
    *(f.title() for f in COVERED_FIELDS),
)


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


def server_tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certfile=str(cert), keyfile=str(key))
    ctx.options |= ssl.OP_NO_COMPRESSION
    return ctx


class HqHandler(BaseHTTPRequestHandler):
    """One connection: TLS handshake, then requests until the client closes (HTTP/1.1 keep-alive)."""

    server: HqHttpServer
    protocol_version = "HTTP/1.1"
    server_version = "bodycam-hq"
    sys_version = ""
    timeout = REQUEST_TIMEOUT_S

    def setup(self) -> None:
        self.request.settimeout(self.timeout)
        self._reading: Deadline | None = None
        with Deadline(self.server.request_deadline_s, self._cut):
            self.request.do_handshake()
        super().setup()

    def handle_one_request(self) -> None:
        self._reading = Deadline(self.server.request_deadline_s, self._cut).start()
        try:
            super().handle_one_request()
        finally:
            self._reading.end()

    def _cut(self) -> None:
        """At the deadline (timer thread): break the reads of a client that is too slow."""
        log.info("%s: request not received within %.0f s; connection closed",
                 self.client_address[0], self.server.request_deadline_s)
        with contextlib.suppress(OSError):
            self.request.shutdown(socket.SHUT_RDWR)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        log.debug("%s %s", self.address_string(), format % args)

    def do_OPTIONS(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def do_GET(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def _serve(self) -> None:
        with self.server.in_flight():
            try:
                response = self._answer()
            except ApiError as err:
                self.close_connection = self.close_connection or err.status in (400, 408, 411, 413)
                response = error_response(err)
            except Exception:
                log.exception("%s %s failed", self.command, self.path)
                self.close_connection = True
                response = Response(500, {"Content-Type": "application/json"}, _internal_error())
            self._send(response)

    def _answer(self) -> Response:
        service = self.server.service
        path = self.path.split("?", 1)[0]
        route = service.route(self.command, path)
        body = self._read_body(route.max_body)
        if self._reading is not None:
            self._reading.end()  # the request is in; what follows is headquarters' own work
            if self._reading.expired:  # cut as the last byte came: act on nothing nobody will hear
                raise ApiError(408, "too-slow", "the request did not arrive within the deadline")
        host = self.headers.get("Host")
        if not host:
            raise ApiError(400, "missing-host", "the Host header is required")
        target_uri = f"https://{host}{self.path}"
        for name in SINGLE_HEADERS:
            if len(self.headers.get_all(name) or []) > 1:
                raise ApiError(400, "duplicate-header", f"{name} appears more than once")
        headers = dict(self.headers.items())
        return service.handle(route, self.command, target_uri, headers, body, self.client_address[0])

    def _read_body(self, limit: int) -> bytes:
        if self.headers.get("Transfer-Encoding"):
            raise ApiError(411, "length-required", "send Content-Length; chunked transfer encoding is not supported")
        text = self.headers.get("Content-Length")
        if text is None:
            if self.command in ("POST", "PATCH"):
                raise ApiError(411, "length-required", "Content-Length is required")
            return b""
        if not text.strip().isdigit():
            raise ApiError(400, "bad-header", "Content-Length must be a non-negative integer")
        length = int(text)
        if length > limit:
            raise ApiError(413, "too-large", f"a body of {length} bytes exceeds this route's limit of {limit}")
        body = self.rfile.read(length)
        if len(body) != length:
            raise ApiError(400, "short-body", "the connection closed before the whole body arrived")
        return body

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        headers = {"Tus-Resumable": TUS_VERSION, **response.headers}
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and response.body:
            self.wfile.write(response.body)


def _internal_error() -> bytes:
    return json.dumps({"error": {"code": "internal", "message": "internal error; see the service log"}}).encode()


class HqHttpServer(ThreadingHTTPServer):
    """ThreadingHTTPServer over TLS with a count of requests in flight, for a graceful stop.

    The accept loop only accepts; each worker thread does its own TLS handshake. Worker threads
    are daemons: ``drain`` waits for requests in progress (an ingest in particular), not for
    idle keep-alive connections.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        service: HqService,
        tls: ssl.SSLContext,
        request_deadline_s: float = REQUEST_DEADLINE_S,
    ) -> None:
        self.service = service
        self.tls = tls
        self.request_deadline_s = request_deadline_s
        self._active = 0
        self._idle = threading.Condition()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, HqHandler)

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = super().get_request()
        return self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.warning(
            "connection from %s ended with an error", client_address[0], exc_info=log.isEnabledFor(logging.DEBUG)
        )

    @contextlib.contextmanager
    def in_flight(self) -> Iterator[None]:
        with self._idle:
            self._active += 1
        try:
            yield
        finally:
            with self._idle:
                self._active -= 1
                self._idle.notify_all()

    def drain(self, timeout_s: float) -> bool:
        """Wait until no request is in progress; False if ``timeout_s`` passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: self._active == 0, timeout=timeout_s)

    @property
    def port(self) -> int:
        return int(self.server_address[1])
