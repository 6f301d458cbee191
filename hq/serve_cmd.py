"""``bodycam-hq serve``: the sync service and the operations room, as one process or ``--workers N``
forked processes sharing the port, until SIGTERM.

The options are checked and the keys, TLS context and listening socket prepared first
(``_serve_setup``: nothing is opened that a mistyped option would leave behind); then each node
process builds the service (``hq.app.build_service``), attaches live view, serves and runs the
periodic maintenance pass; the parent of ``--workers`` audits the start and stop, announces the
address and sums the workers' metrics.
"""

from __future__ import annotations

import argparse
import errno
import logging
import signal
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from agent.evidence.keys import KeyFileError
from hq import ops_room, witness_client
from hq.app import MAINTAIN_INTERVAL_S, Maintenance, build_service, open_index
from hq.audit import Auditor
from hq.basemap import BasemapError
from hq.cmdutil import STORE_URL_HELP, actor, fail
from hq.guard import OriginError, parse_origin
from hq.index import HqIndexError, SqlIndex
from hq.ingest_pool import IngestSettings, default_workers
from hq.limits import DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_PER_SOURCE, LimitSettings
from hq.live.options import LiveSetupError, add_live_options, attach_live
from hq.metrics import Metrics, serve_metrics, serve_multiprocess_metrics
from hq.serve import (
    DRAIN_TIMEOUT_S,
    HqServer,
    ListenError,
    bind,
    check_listen,
    is_loopback,
    parse_listen,
    parse_unix_listen,
)
from hq.storage import StorageError
from hq.storeurl import StoreUrlError, parse_store_url
from hq.tls import PROFILES, TlsError, server_tls_context
from hq.web import options as web_options
from hq.workers import MetricsDir, WorkerError, Workers

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Serve:
    """What ``serve`` decided from its options before binding or opening anything."""

    keys: Path
    address: tuple[str, int] | Path
    host: str
    origins: list[str]
    metrics_at: tuple[str, int] | None
    tls: ssl.SSLContext | None
    limits: LimitSettings
    scheme: str
    ops: ops_room.OpsSettings


def _serve_setup(args: argparse.Namespace) -> _Serve:
    keys: Path = args.keys or args.data_dir / "keys"
    unix = parse_unix_listen(args.listen)
    host, port = ("localhost", 0) if unix else parse_listen(args.listen)
    check_listen(host, args.allow_remote)
    origins = [parse_origin(o) for o in args.public_origin]
    _check_serve_options(args, host, origins)
    if unix and not args.behind_proxy:
        raise ListenError(f"--listen {args.listen}: a Unix socket is for a proxy in front: add --behind-proxy")
    metrics_at = _metrics_address(args.metrics_listen)
    needed = ("receipt.key",) if args.behind_proxy else ("server.pem", "server.key", "receipt.key")
    _require_keys(keys, *needed)
    tls = None if args.behind_proxy else server_tls_context(keys / "server.pem", keys / "server.key", args.profile)
    limits = LimitSettings(max_connections=args.max_connections, max_per_source=args.max_connections_per_source)
    return _Serve(keys, unix or (host, port), host, origins, metrics_at, tls, limits,
                  "http" if args.behind_proxy else "https", ops_room.settings(args))


_SERVE_PROBLEMS = (ops_room.OpsSettingsError, ListenError, OriginError, OSError, HqIndexError, KeyFileError, TlsError,
                   ssl.SSLError, WorkerError)


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        if args.store_url is not None:
            parse_store_url(args.store_url)  # a mistyped URL is refused before anything is opened
    except StoreUrlError as exc:
        return fail("serve", str(exc), 2)
    try:
        setup = _serve_setup(args)
        sock = bind(setup.address)
    except _SERVE_PROBLEMS as exc:
        return fail("serve", _serve_problem(exc, args.listen), 2)
    try:
        if args.workers > 1:
            return _serve_workers(args, setup, sock)
        try:
            index = open_index(args.data_dir, args.database_url)
        except _SERVE_PROBLEMS as exc:
            return fail("serve", _serve_problem(exc, args.listen), 2)
        return _run_node(args, setup, sock, index, Metrics(), announce=True)
    finally:
        sock.close()


def _run_node(args: argparse.Namespace, setup: _Serve, sock: socket.socket, index: SqlIndex, metrics: Metrics,
              announce: bool, stop: threading.Event | None = None) -> int:
    """Serve on ``sock`` until SIGTERM: the one process of a node, or one of its workers
    (``announce`` False: the parent audits, prints and serves the metrics)."""
    try:
        ingest = IngestSettings(workers=args.ingest_workers, wait_s=args.ingest_wait_s,
                                claim_lease_s=args.ingest_lease_s)
        service = build_service(args.data_dir, setup.keys, index, ingest=ingest, sole_node=announce,
                                store_url=args.store_url, log_origin=args.log_origin,
                                witnesses=witness_client.policy(args))
        attach_live(args, service)
        server = HqServer(sock, service, setup.tls, origins=setup.origins, limits=setup.limits,
                          behind_proxy=args.behind_proxy, metrics=metrics, ops=setup.ops,
                          web=web_options.settings(args))
        exporter = serve_metrics(metrics, *setup.metrics_at) if setup.metrics_at and announce else None
    except (KeyFileError, OSError) as exc:
        index.close()
        return fail("serve", _serve_problem(exc, args.listen), 2)
    except (StoreUrlError, StorageError, BasemapError, LiveSetupError) as exc:
        index.close()
        return fail("serve", str(exc), 2)
    stop = stop or _stop_on_signals()
    loop = threading.Thread(target=server.serve_forever, name="hq-serve", daemon=True)
    loop.start()
    maintenance = Maintenance(service, args.maintain_interval_s)
    maintenance.start()
    if announce:
        _announce(args, setup, service.audit, server.port, exporter.port if exporter else None)
    try:
        while not stop.wait(1.0) and loop.is_alive():
            pass
    finally:
        server.shutdown()  # no new connections; requests in flight continue
        drained = server.drain(DRAIN_TIMEOUT_S + 5)
        server.server_close()
        maintenance.stop()
        service.close()
        if exporter is not None:
            exporter.close()
        if announce:
            service.audit.record("service-stop", actor(), f"{setup.scheme}://{args.listen}",
                                 "ok" if drained else "failed")
        index.close()
    if announce:
        print("bodycam-hq: stopped", flush=True)
    return 0 if drained or announce else 1


def _serve_workers(args: argparse.Namespace, setup: _Serve, sock: socket.socket) -> int:
    """``--workers N``: fork the workers first (no thread may exist at a fork), then audit,
    announce, serve their summed metrics and wait for SIGTERM or a worker's end."""
    metrics_dir = MetricsDir()
    def worker(_index: int) -> int:
        stop = _stop_on_signals()  # first: a SIGTERM while the worker starts up stops it cleanly
        node_index = open_index(args.data_dir, args.database_url)
        return _run_node(args, setup, sock, node_index, Metrics(multiprocess=True), announce=False, stop=stop)

    workers = Workers(args.workers, worker)
    exporter = None
    log.info("%d workers; their metrics are summed from %s", args.workers, metrics_dir.path)
    try:
        workers.start()
        index = open_index(args.data_dir, args.database_url)
        auditor = Auditor(index, "hq-api", time.time_ns)
        stop = _stop_on_signals()
        if setup.metrics_at:
            exporter = serve_multiprocess_metrics(metrics_dir.path, *setup.metrics_at)
        port = int(sock.getsockname()[1]) if isinstance(setup.address, tuple) else 0
        _announce(args, setup, auditor, port, exporter.port if exporter else None)
        crashed: list[int] = []
        while not stop.wait(0.5) and not crashed:
            crashed = workers.reap()
        if crashed:
            log.error("worker %s stopped (exit %s): stopping the others; the service manager restarts the node",
                      crashed[0], workers.exits[crashed[0]])
        clean = workers.stop(DRAIN_TIMEOUT_S + 10) and not crashed
        auditor.record("service-stop", actor(), f"{setup.scheme}://{args.listen}", "ok" if clean else "failed",
                       workers=args.workers)
        index.close()
    finally:
        if workers.pids:
            workers.stop(5)
        if exporter is not None:
            exporter.close()
        metrics_dir.close()
    print("bodycam-hq: stopped", flush=True)
    return 0 if clean else 1


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stop


def _announce(args: argparse.Namespace, setup: _Serve, audit: Auditor, port: int, metrics_port: int | None) -> None:
    """The ``service-start`` record and the lines that say where the node serves."""
    audit.record("service-start", actor(), f"{setup.scheme}://{args.listen}", "ok", port=port,
                 origins=setup.origins or None, behind_proxy=args.behind_proxy, tls_profile=args.profile,
                 workers=args.workers)
    unix = setup.address if isinstance(setup.address, Path) else None
    where = f"http+unix://{unix}:" if unix else f"{setup.scheme}://{_authority(setup.host, port)}"
    print(f"bodycam-hq: serving {where}/v1/", flush=True)
    if metrics_port is not None and setup.metrics_at is not None:
        print(f"bodycam-hq: metrics on http://{_authority(setup.metrics_at[0], metrics_port)}/metrics", flush=True)


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _check_serve_options(args: argparse.Namespace, host: str, origins: list[str]) -> None:
    if args.workers < 1:
        raise ListenError(f"--workers {args.workers}: give at least 1")
    database: str = getattr(args, "database_url", None) or "sqlite"
    if args.workers > 1 and database.startswith("sqlite"):
        # The embedded index is one SQLite file; uploads and ingest are serialised by locks inside one process.
        raise ListenError(f"--workers {args.workers}: the embedded SQLite index serialises uploads with locks "
                          "inside one process, so it is served by one worker; use --workers 1, or the "
                          "PostgreSQL index for several")
    if not origins and not is_loopback(host):
        raise ListenError("listening beyond loopback needs --public-origin https://NAME:PORT (repeatable): the "
                          "origins units sign their requests for; requests for any other are refused")
    if args.behind_proxy and not origins:
        raise ListenError("--behind-proxy needs --public-origin https://NAME:PORT: the proxy's public origin, "
                          "which units sign their requests for")


def _metrics_address(text: str | None) -> tuple[str, int] | None:
    if text is None:
        return None
    try:
        host, port = parse_listen(text)
    except ListenError:
        raise ListenError(f"--metrics-listen {text!r}: expected HOST:PORT") from None
    if not is_loopback(host):
        raise ListenError(f"--metrics-listen {text!r}: metrics are served on loopback only (scrape them through "
                          "a local agent or an SSH tunnel)")
    return host, port


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1 or len(text) > 6:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 1 to 999999")
    return int(text)


def _positive_float(text: str) -> float:
    value = _non_negative_float(text)
    if value <= 0.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0, up to 3600")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 3600.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds from 0 to 3600")
    return value


def _require_keys(keys: Path, *names: str) -> None:
    for name in names:
        if not (keys / name).is_file():
            make = f"--data-dir {keys.parent}" if keys.name == "keys" else f"--out {keys}"
            raise KeyFileError(f"{keys / name} does not exist: create headquarters' keys with "
                               f"`bodycam-hq keygen {make}`, or give the folder that holds them with --keys DIR")


def _serve_problem(exc: Exception, listen: str) -> str:
    """One line for a service that cannot start: which file or address, and what to do."""
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return (f"{listen} is already in use (another bodycam-hq serve?): stop that one, "
                "or listen elsewhere with --listen HOST:PORT")
    if isinstance(exc, OSError) and exc.errno == errno.EACCES and exc.filename is None:
        return f"not allowed to listen on {listen}: use a port above 1023, or run as a user allowed to"
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], data: argparse.ArgumentParser) -> None:
    """Add ``serve`` with every option it takes."""
    p = sub.add_parser("serve", parents=[data], help="run the sync service (HTTPS)")
    p.add_argument("--listen", required=True, help="HOST:PORT (loopback only unless --allow-remote), or "
                   "unix:/PATH with --behind-proxy")
    p.add_argument("--keys", type=Path, help="keys dir (default: DATA_DIR/keys)")
    p.add_argument("--allow-remote", action="store_true", help="allow listening on a non-loopback address")
    p.add_argument("--public-origin", "--proxy", action="append", default=[], metavar="https://HOST:PORT",
                   help="an origin units reach this service by (repeatable); request signatures cover it and "
                   "requests naming any other are refused (default: the loopback names of --listen)")
    p.add_argument("--behind-proxy", action="store_true",
                   help="plain HTTP on loopback behind a TLS-terminating proxy (HAProxy, nginx); needs --public-origin")
    p.add_argument("--profile", choices=PROFILES, default="default",
                   help="TLS suites: default (TLS 1.3, TLS 1.2 AEAD), fips (FIPS-approved suites and groups only)")
    ops_room.add_arguments(p)
    web_options.add_arguments(p)
    p.add_argument("--workers", type=int, default=1,
                   help="server processes sharing the port (default 1; the embedded SQLite index: 1)")
    p.add_argument("--metrics-listen", metavar="HOST:PORT", help="serve Prometheus metrics here (loopback only)")
    p.add_argument("--max-connections", type=int, default=DEFAULT_MAX_CONNECTIONS,
                   help=f"open connections in all (default {DEFAULT_MAX_CONNECTIONS})")
    p.add_argument("--max-connections-per-source", type=int, default=DEFAULT_MAX_PER_SOURCE,
                   help=f"open connections from one address (default {DEFAULT_MAX_PER_SOURCE})")
    p.add_argument("--ingest-workers", type=_positive_int, default=default_workers(), metavar="N",
                   help="threads verifying and storing completed uploads (default: min(4, CPUs))")
    p.add_argument("--ingest-wait-s", type=_non_negative_float, default=IngestSettings().wait_s, metavar="S",
                   help="how long a completing PATCH waits for its receipt before answering that ingest is in "
                        "progress (default: %(default)s)")
    p.add_argument("--store-url", help=STORE_URL_HELP)
    p.add_argument("--ingest-lease-s", type=_positive_float, default=IngestSettings().claim_lease_s, metavar="S",
                   help="an upload claimed for ingest longer ago than this is taken over by another node (its own "
                        "stopped mid-ingest); longer than the slowest ingest (default: %(default)s)")
    p.add_argument("--maintain-interval-s", type=_positive_float, default=MAINTAIN_INTERVAL_S, metavar="S",
                   help="how often the periodic pass queues completed uploads left behind, expires abandoned ones, "
                        "asks witnesses to cosign and applies retention (default: %(default)s)")
    witness_client.add_serve_options(p)
    add_live_options(p)
    p.set_defaults(func=cmd_serve)
