"""The ``bodycam-hq`` command: its parser, the data dir's locks, and the small commands (keygen,
enroll, revoke, evidence list, export). Larger commands live in their own ``hq/*_cmd.py`` module
(``serve`` in serve_cmd.py) registered here with one line each."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

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
    serve_cmd,
    technician_cmd,
    user_cmd,
    witness_cmd,
)
from hq.app import open_index, prepare
from hq.audit import Auditor
from hq.cmdutil import STORE_URL_HELP, actor, fail
from hq.export import ExportError, evidence_rows, export, parse_time
from hq.index import HqIndexError, SqlIndex
from hq.keygen import keygen
from hq.records import valid_device_id
from hq.storage import StorageError
from hq.storeurl import StoreUrlError, open_evidence_store
from hq.tlog import log_reader

log = logging.getLogger(__name__)

SERVE_LOCK_NAME = "serve.lock"


def _auditor(index: SqlIndex) -> Auditor:
    return Auditor(index, "hq-cli", time.time_ns)


def _holds_evidence(data_dir: Path) -> bool:
    evidence = data_dir / "evidence"
    return evidence.is_dir() and any(p.is_file() for p in evidence.rglob("*"))


def cmd_keygen(args: argparse.Namespace) -> int:
    out: Path | None = args.out or (args.data_dir / "keys" if args.data_dir else None)
    if out is None:
        return fail("keygen", "give --out DIR (or --data-dir H for H/keys)", 2)
    if args.force and args.data_dir is not None and _holds_evidence(args.data_dir):
        return fail("keygen", f"{args.data_dir} holds evidence sealed to the current hq.key: replacing it would"
                     " make that evidence undecryptable; keep these keys (or move the data dir aside)", 2)
    try:
        result = keygen(out, profile=args.profile, extra_sans=tuple(args.san), overwrite=args.force)
    except KeyFileError as exc:
        return fail("keygen", str(exc))
    print(f"headquarters keys ({args.profile} profile) written to {out}:")
    print("  hq.key      (0600) HPKE private key: decrypts evidence; keep it offline, not on the service host")
    print("  receipt.key (0600) signs receipts;  ca.key (0600) the CA's key: keep it offline")
    print("  server.key  (0600), server.pem: the service's TLS certificate for " + ", ".join(result.sans))
    print("  hq.pub, ca.pem: provision every unit with these two")
    print(f"hq.pub SHA-256 {result.hq_fingerprint}")
    print(f"receipt key SHA-256 {result.receipt_fingerprint}")
    print(f"ca.pem SHA-256 {result.ca_fingerprint}")
    return 0


def cmd_enroll(args: argparse.Namespace) -> int:
    device_id: str = args.device_id
    if not valid_device_id(device_id):
        return fail("enroll", f"--device-id {device_id!r} is not a device id: use {DEVICE_ID_RULE}", 2)
    try:
        pub = load_device_public(args.device_pub)
    except KeyFileError as exc:
        return fail("enroll", str(exc), 2)
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
            audit.record("enroll", actor(), device_id, "refused", reason=refusal, key_sha256=fp)
            return fail("enroll", refusal)
        index.enroll(device_id, public_pem(pub).decode("ascii"), fp, time.time_ns())
        audit.record("enroll", actor(), device_id, "ok", key_sha256=fp)
    print(f"enrolled {device_id}: key SHA-256 {fp}")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    with open_index(args.data_dir, args.database_url) as index:
        audit = _auditor(index)
        if index.device(args.device_id) is None:
            audit.record("revoke", actor(), args.device_id, "refused", reason="not enrolled")
            return fail("revoke", f"{args.device_id} is not enrolled")
        changed = index.revoke(args.device_id, time.time_ns())
        audit.record("revoke", actor(), args.device_id, "ok", already_revoked=not changed)
    print(f"{args.device_id} {'revoked' if changed else 'was already revoked'}: its requests are refused from now on")
    return 0


def cmd_evidence_list(args: argparse.Namespace) -> int:
    with open_index(args.data_dir, args.database_url) as index:
        rows = evidence_rows(index, args.device_id, background_only=args.background)
        _auditor(index).record("evidence-list", actor(), args.device_id or "*", "ok", rows=len(rows),
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
        return fail("export", "give --device-id UNIT (a unit's evidence) or --case CASE (a case's)", 2)
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
                exported_by=actor(),
                now_ns=time.time_ns(),
                tlog=log_reader(index),
            )
        except (ExportError, OSError, StoreUrlError, StorageError) as exc:
            audit.record("export", actor(), target, "refused", reason=str(exc))
            return fail("export", str(exc))
        audit.record(
            "export",
            actor(),
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

    serve_cmd.add_parser(sub, data)

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
        return fail(args.command, explain(exc, args.data_dir, option="--data-dir"), 2)
    try:
        code: int = args.func(args)
    except HqIndexError as exc:  # the index refused or is unreachable: one line, what to do
        return fail(args.command, str(exc))
    finally:
        for lock in locks:
            lock.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
