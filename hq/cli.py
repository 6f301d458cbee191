"""The ``bodycam-hq`` command: keygen, decrypt, serve, enroll, revoke, evidence list, export and
technician certificates."""

from __future__ import annotations

import argparse
import errno
import getpass
import json
import logging
import signal
import socket
import ssl
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from agent.cliargs import DEVICE_ID_RULE, Parser, Renamed, add_common, add_verbose
from agent.dirlock import DirLock, DirLockError
from agent.evidence.keys import KeyFileError, fingerprint, load_device_public, public_der, public_pem
from agent.fserrors import explain
from agent.humanize import plural
from agent.textsafe import install_safe_logging, safe_text
from hq import (
    background_cmd,
    db_cmd,
    decrypt_cmd,
    decryptd_cmd,
    lifecycle_cmd,
    ops_room,
    technician_cmd,
    user_cmd,
    witness_client,
    witness_cmd,
)
from hq.app import MAINTAIN_INTERVAL_S, Maintenance, build_service, open_index, prepare
from hq.audit import Auditor
from hq.basemap import BasemapError
from hq.export import ExportError, evidence_rows, export, parse_time
from hq.guard import OriginError, parse_origin
from hq.index import HqIndexError, SqlIndex
from hq.ingest_pool import IngestSettings, default_workers
from hq.keygen import keygen
from hq.limits import DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_PER_SOURCE, LimitSettings
from hq.live.options import LiveSetupError, add_live_options, attach_live
from hq.metrics import Metrics, serve_metrics, serve_multiprocess_metrics
from hq.records import valid_device_id
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
from hq.storeurl import StoreUrlError, open_evidence_store, parse_store_url
from hq.tlog import log_reader
from hq.tls import PROFILES, TlsError, server_tls_context
from hq.web import options as web_options
from hq.workers import MetricsDir, WorkerError, Workers

log = logging.getLogger(__name__)

SERVE_LOCK_NAME = "serve.lock"


def _fail(command: str, message: str, code: int = 1) -> int:
    print(f"bodycam-hq {command}: {message}", file=sys.stderr)
    return code


def _auditor(index: SqlIndex) -> Auditor:
    return Auditor(index, "hq-cli", time.time_ns)


def _actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _holds_evidence(data_dir: Path) -> bool:
    evidence = data_dir / "evidence"
    return evidence.is_dir() and any(p.is_file() for p in evidence.rglob("*"))


def cmd_keygen(args: argparse.Namespace) -> int:
    out: Path | None = args.out or (args.data_dir / "keys" if args.data_dir else None)
    if out is None:
        return _fail("keygen", "give --out DIR (or --data-dir H for H/keys)", 2)
    if args.force and args.data_dir is not None and _holds_evidence(args.data_dir):
        return _fail("keygen", f"{args.data_dir} holds evidence sealed to the current hq.key: replacing it would"
                     " make that evidence undecryptable; keep these keys (or move the data dir aside)", 2)
    try:
        result = keygen(out, profile=args.profile, extra_sans=tuple(args.san), overwrite=args.force)
    except KeyFileError as exc:
        return _fail("keygen", str(exc))
    print(f"headquarters keys ({args.profile} profile) written to {out}:")
    print("  hq.key      (0600) HPKE private key: decrypts evidence; keep it offline, not on the service host")
    print("  receipt.key (0600) signs receipts;  ca.key (0600) the CA's key: keep it offline")
    print("  server.key  (0600), server.pem: the service's TLS certificate for " + ", ".join(result.sans))
    print("  hq.pub, ca.pem: provision every unit with these two")
    print(f"hq.pub SHA-256 {result.hq_fingerprint}")
    print(f"receipt key SHA-256 {result.receipt_fingerprint}")
    print(f"ca.pem SHA-256 {result.ca_fingerprint}")
    return 0


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
        return _fail("serve", str(exc), 2)
    try:
        setup = _serve_setup(args)
        sock = bind(setup.address)
    except _SERVE_PROBLEMS as exc:
        return _fail("serve", _serve_problem(exc, args.listen), 2)
    try:
        if args.workers > 1:
            return _serve_workers(args, setup, sock)
        try:
            index = open_index(args.data_dir, args.database_url)
        except _SERVE_PROBLEMS as exc:
            return _fail("serve", _serve_problem(exc, args.listen), 2)
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
        return _fail("serve", _serve_problem(exc, args.listen), 2)
    except (StoreUrlError, StorageError, BasemapError, LiveSetupError) as exc:
        index.close()
        return _fail("serve", str(exc), 2)
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
            service.audit.record("service-stop", _actor(), f"{setup.scheme}://{args.listen}",
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
        auditor.record("service-stop", _actor(), f"{setup.scheme}://{args.listen}", "ok" if clean else "failed",
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
    audit.record("service-start", _actor(), f"{setup.scheme}://{args.listen}", "ok", port=port,
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


def cmd_enroll(args: argparse.Namespace) -> int:
    device_id: str = args.device_id
    if not valid_device_id(device_id):
        return _fail("enroll", f"--device-id {device_id!r} is not a device id: use {DEVICE_ID_RULE}", 2)
    try:
        pub = load_device_public(args.device_pub)
    except KeyFileError as exc:
        return _fail("enroll", str(exc), 2)
    fp = fingerprint(public_der(pub))
    with open_index(args.data_dir, args.database_url) as index:
        audit = _auditor(index)
        existing, same_key = index.device(device_id), index.device_by_fingerprint(fp)
        if existing is not None and existing.fingerprint == fp and existing.active:
            print(f"{device_id} is already enrolled with key SHA-256 {fp}")
            return 0
        refusal = None
        if existing is not None:
            refusal = f"{device_id} is already enrolled with another key, or revoked"
        elif same_key is not None:
            refusal = f"this key is already enrolled as {same_key.device_id}"
        if refusal is not None:
            audit.record("enroll", _actor(), device_id, "refused", reason=refusal, key_sha256=fp)
            return _fail("enroll", refusal)
        index.enroll(device_id, public_pem(pub).decode("ascii"), fp, time.time_ns())
        audit.record("enroll", _actor(), device_id, "ok", key_sha256=fp)
    print(f"enrolled {device_id}: key SHA-256 {fp}")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    with open_index(args.data_dir, args.database_url) as index:
        audit = _auditor(index)
        if index.device(args.device_id) is None:
            audit.record("revoke", _actor(), args.device_id, "refused", reason="not enrolled")
            return _fail("revoke", f"{args.device_id} is not enrolled")
        changed = index.revoke(args.device_id, time.time_ns())
        audit.record("revoke", _actor(), args.device_id, "ok", already_revoked=not changed)
    print(f"{args.device_id} {'revoked' if changed else 'was already revoked'}: its requests are refused from now on")
    return 0


def cmd_evidence_list(args: argparse.Namespace) -> int:
    with open_index(args.data_dir, args.database_url) as index:
        rows = evidence_rows(index, args.device_id, background_only=args.background)
        _auditor(index).record("evidence-list", _actor(), args.device_id or "*", "ok", rows=len(rows),
                               background_only=args.background)
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        print()
        return 0
    print(f"{'device':<20} {'seq':>8} {'kind':<8} {'flags':<18} {'size':>11} {'received (UTC)':<27} "
          "status / receipt")
    for r in rows:
        receipt = r["receipt"]
        tail = f"receipt through {receipt['contiguous_through']}" if receipt else r.get("reason", "no receipt")
        print(safe_text(  # ids, kinds, flags and reasons came from units
            f"{r['device_id']:<20} {r['seq'] if r['seq'] is not None else '-':>8} {r['kind'] or '-':<8} "
            f"{','.join(r['flags']) or '-':<18} {r.get('size_bytes', '-'):>11} {r['received_utc']:<27} "
            f"{r['status']}: {tail}"
        ))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    keys: Path = args.keys or args.data_dir / "keys"
    if args.case is not None:
        return lifecycle_cmd.cmd_case_export(args, keys)
    if args.device_id is None:
        return _fail("export", "give --device-id UNIT (a unit's evidence) or --case CASE (a case's)", 2)
    with open_index(args.data_dir, args.database_url) as index:
        audit = _auditor(index)
        target = f"{args.device_id} -> {args.out}"
        try:
            from_ns = parse_time(args.from_) if args.from_ else None
            to_ns = parse_time(args.to) if args.to else None
            result = export(
                index,
                open_evidence_store(args.data_dir, args.store_url),
                args.device_id,
                args.out,
                from_ns,
                to_ns,
                hq_pub=keys / "hq.pub",
                exported_by=_actor(),
                now_ns=time.time_ns(),
                tlog=log_reader(index),
            )
        except (ExportError, OSError, StoreUrlError, StorageError) as exc:
            audit.record("export", _actor(), target, "refused", reason=str(exc))
            return _fail("export", str(exc))
        audit.record(
            "export",
            _actor(),
            target,
            "ok",
            entries=result.entries,
            first_seq=result.first_seq,
            last_seq=result.last_seq,
        )
    print(f"exported {plural(result.entries, 'entry', 'entries')} (seq {result.first_seq}..{result.last_seq}) "
          f"of {args.device_id} to {args.out}")
    anchors = "".join(f" --anchor {args.out / 'anchors' / a}" for a in result.anchors)
    print(f"check it with: bodycam verify {args.out} --device-pub {args.out / 'device.pub'}{anchors}")
    return 0


STORE_URL_HELP = ("where evidence is kept: s3://BUCKET?endpoint=URL&retention_days=N&... (an S3 bucket with "
                  "Object Lock; docs/deployment-hq.md, 'Object store'); default: files in DATA_DIR")
VERBOSE_HELP = "log more: each audit record and request (serve logs them without -v)"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="bodycam-hq", description="bodycam headquarters: keys, the sync service, enrolment, "
                    "evidence and exports. `bodycam-hq COMMAND --help` explains each command.")
    add_common(parser, VERBOSE_HELP)
    sub: argparse._SubParsersAction[argparse.ArgumentParser] = parser.add_subparsers(  # type: ignore[assignment]
        dest="command", required=True, metavar="COMMAND")
    data = argparse.ArgumentParser(add_help=False)
    data.add_argument("--data-dir", type=Path, required=True,
                      help="headquarters' data dir (made by keygen --data-dir or serve)")
    db_cmd.add_database_url(data)

    p = sub.add_parser("keygen", help="create headquarters' keys, CA and TLS certificate")
    p.add_argument("--out", type=Path, help="where to write the keys (default: DATA_DIR/keys)")
    p.add_argument("--data-dir", type=Path, help="headquarters' data dir: keys go to DATA_DIR/keys")
    p.add_argument("--profile", choices=("default", "fips"), default="default",
                   help="default: X25519 and Ed25519; fips: P-256 for FIPS-approved primitives")
    p.add_argument("--san", action="append", default=[], help="extra DNS name or IP for server.pem (repeatable)")
    p.add_argument("--force", action="store_true", help="overwrite existing keys (evidence sealed to them is lost)")
    p.set_defaults(func=cmd_keygen)

    decrypt_cmd.add_parser(sub)
    decryptd_cmd.add_parser(sub)

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

    p = sub.add_parser("enroll", parents=[data], help="enrol a unit's public key")
    p.add_argument("--device-id", required=True, help="the unit's id, as provisioned")
    p.add_argument("--device-pub", type=Path, required=True, help="the unit's device.pub (from its data dir)")
    p.set_defaults(func=cmd_enroll)

    p = sub.add_parser("revoke", parents=[data], help="revoke a unit: its requests are refused")
    p.add_argument("--device-id", required=True, help="the unit to revoke")
    p.set_defaults(func=cmd_revoke)

    p = sub.add_parser("evidence", help="held evidence")
    esub = p.add_subparsers(dest="evidence_command", required=True, metavar="COMMAND")
    p = esub.add_parser("list", parents=[data], help="list segments held, their verification and receipts")
    p.add_argument("--device-id", "--device", action=Renamed, help="only this unit's evidence")
    p.add_argument("--background", action="store_true",
                   help="only segments copied from a unit's background ring (record after the fact)")
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.set_defaults(func=cmd_evidence_list)

    p = sub.add_parser("export", parents=[data], help="export a unit's evidence, or a case's, for bodycam verify")
    p.add_argument("--device-id", "--device", action=Renamed, help="the unit whose evidence to export")
    lifecycle_cmd.add_case_export_options(p)
    p.add_argument("--from", dest="from_", help="UTC start (ISO 8601 or ns)")
    p.add_argument("--to", help="UTC end (ISO 8601 or ns)")
    p.add_argument("--out", type=Path, required=True, help="a new or empty folder for the export")
    p.add_argument("--keys", type=Path, help="keys dir, for receipts/hq.pub (default: DATA_DIR/keys)")
    p.add_argument("--store-url", help=STORE_URL_HELP)
    p.set_defaults(func=cmd_export)

    technician_cmd.add_parser(sub, data)
    witness_cmd.add_parsers(sub)
    users = user_cmd.add_parser(sub, data)
    background_cmd.add_parser(sub, data)
    maintenance = db_cmd.add_parsers(sub) + lifecycle_cmd.add_parsers(sub, data)
    for choice in [*sub.choices.values(), *esub.choices.values(), *maintenance, *users]:
        add_verbose(choice, VERBOSE_HELP)
    return parser


# Which lock on headquarters' data dir each command holds while it runs (agent.dirlock): one service
# per data dir; commands that only add rows (enrol, revoke, list, export) run beside it; keygen, which
# replaces files the service reads, runs alone.
_SHARED = ("serve", "enroll", "revoke", "evidence", "export", "technician", "migrate", "audit", "heartbeats",
           "user", "background", "category", "case", "lifecycle")
# Commands that only read or add to a headquarters that exists: a mistyped --data-dir is refused,
# never silently made into a new, empty headquarters.
_NEEDS_SETUP = ("enroll", "revoke", "evidence", "export", "technician", "migrate", "audit", "heartbeats", "user",
                "background", "category", "case", "lifecycle")


def _take_locks(args: argparse.Namespace) -> list[DirLock]:
    data_dir: Path | None = getattr(args, "data_dir", None)
    if data_dir is None or args.command not in (*_SHARED, "keygen"):
        return []
    if args.command in _NEEDS_SETUP and not is_set_up(data_dir):
        raise DirLockError(f"{data_dir} is not a headquarters data dir (no keys/, no index.sqlite): check the "
                           f"path, or set one up with `bodycam-hq keygen --data-dir {data_dir}` then serve")
    prepare(data_dir)
    wanted = [DirLock(data_dir, f"bodycam-hq {args.command}", shared=args.command in _SHARED)]
    if args.command == "serve":
        wanted.insert(0, DirLock(data_dir, "bodycam-hq serve", name=SERVE_LOCK_NAME))
    held: list[DirLock] = []
    try:
        for lock in wanted:
            held.append(lock.acquire())
    except DirLockError:
        for lock in held:
            lock.close()
        raise
    return held


def is_set_up(data_dir: Path) -> bool:
    """Whether keygen or serve ever made ``data_dir`` a headquarters."""
    return (data_dir / "keys").is_dir() or (data_dir / "index.sqlite").is_file()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # commands say what they did on stdout; their audit records go to the log, shown with -v.
    # A service's log is its output: serve logs at INFO.
    level = logging.INFO if args.verbose or args.command in ("serve", "decryptd") else logging.WARNING
    # logs hold what units send (ids, file names, headers): escaped, never replayed on a terminal
    install_safe_logging(level, "%(levelname)s %(name)s: %(message)s")
    try:
        locks = _take_locks(args)
    except (DirLockError, OSError) as exc:
        return _fail(args.command, explain(exc, args.data_dir, option="--data-dir"), 2)
    try:
        code: int = args.func(args)
    except HqIndexError as exc:  # the index refused or is unreachable: one line, what to do
        return _fail(args.command, str(exc))
    finally:
        for lock in locks:
            lock.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
