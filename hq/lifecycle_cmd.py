"""The evidence lifecycle's commands: ``bodycam-hq category ...`` (retention categories and their
assignment to recordings), ``bodycam-hq case ...`` (cases and legal hold) and ``bodycam-hq
lifecycle ...`` (recordings, the deletion queue, restore, one pass now, the custody ledger).

Each command opens the index (``--data-dir``/``--database-url``) and the evidence store
(``--store-url``, default the data dir's files), acts through ``LifecycleService`` and prints one
line per result; every action is audited and written to the custody ledger as the OS user.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.evidence.keys import KeyFileError, load_hq_private
from agent.textsafe import safe_text
from hq.app import lifecycle_service, open_index
from hq.audit import Auditor
from hq.case_export import export_case
from hq.credentials import CredentialsError, ensure_credentials
from hq.db import HqIndexError
from hq.decrypt_client import DecryptClient
from hq.evidence_service import Decrypter
from hq.export import ExportError, iso
from hq.lifecycle import RECORDING_STATES, ROLES, LifecycleError, describe_retention, parse_retention, retain_until_ns
from hq.lifecycle_service import LifecycleService
from hq.storage import StorageError
from hq.storeurl import StoreUrlError, open_evidence_store
from hq.timestamp import TsaClient, TsaError
from hq.viewing_copy import KeyDecrypter

STORE_URL_HELP = "where evidence is kept (as serve's --store-url); default: files in DATA_DIR"
Handler = Callable[[LifecycleService, argparse.Namespace, str], str]


def _actor() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _run(name: str, handler: Handler) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        data_dir: Path = args.data_dir
        try:
            with open_index(data_dir, args.database_url) as index:
                store = open_evidence_store(data_dir, args.store_url)
                out = handler(lifecycle_service(index, store, time.time_ns, "hq-cli"), args, _actor())
        except (LifecycleError, HqIndexError, StorageError, StoreUrlError) as exc:
            print(f"bodycam-hq {name}: {exc}", file=sys.stderr)
            return 1
        if out:
            print(out)
        return 0

    return run


def _when(ns: int | None) -> str:
    return "-" if ns is None else iso(ns)[:19] + "Z"


# -- category ---------------------------------------------------------------------------------

def _category_list(lc: LifecycleService, args: argparse.Namespace, actor: str) -> str:
    rows = sorted(lc.index.categories().values(), key=lambda c: c.name)
    lines = [f"{'category':<20} {'retention':<24} {'role':<9} about"]
    lines += [safe_text(f"{c.name:<20} {describe_retention(c.retention_s):<24} {c.role or '-':<9} {c.doc}")
              for c in rows]
    return "\n".join(lines)


def _category_set(lc: LifecycleService, args: argparse.Namespace, actor: str) -> str:
    retention = parse_retention(args.retention)
    new = lc.set_category(actor, args.name, retention, args.role, args.doc or "")
    return f"category {args.name} {'added' if new else 'changed'}: kept {describe_retention(retention)}"


def _category_assign(lc: LifecycleService, args: argparse.Namespace, actor: str) -> str:
    changed = lc.assign(actor, args.device_id, args.recording, args.category)
    return (f"{args.device_id}/{args.recording}: {args.category} "
            f"{'assigned' if changed else 'was already assigned'}")


def _category_remove(lc: LifecycleService, args: argparse.Namespace, actor: str) -> str:
    changed = lc.unassign(actor, args.device_id, args.recording, args.category)
    return f"{args.device_id}/{args.recording}: {args.category} {'removed' if changed else 'was not assigned'}"


# -- case ---------------------------------------------------------------------------------------

def _case_open(lc: LifecycleService, args: argparse.Namespace, actor: str) -> str:
    lc.open_case(actor, args.case_id, args.title)
    return f"case {args.case_id} opened: evidence added to it is on legal hold until it is closed"


def _case_add(lc: LifecycleService, args: argparse.Namespace, actor: str) -> str:
    added = lc.add_to_case(actor, args.case_id, args.device_id, args.recording)
    rec = lc.index.recording(args.device_id, args.recording)
    store = "set in the store" if rec is not None and rec.hold_applied else "set in the store by serve's next pass"
    return (f"{args.device_id}/{args.recording} {'added to' if added else 'was already in'} case {args.case_id}: "
            f"on legal hold (index; {store})")


def _case_remove(lc: LifecycleService, args: argparse.Namespace, actor: str) -> str:
    removed = lc.remove_from_case(actor, args.case_id, args.device_id, args.recording)
    return f"{args.device_id}/{args.recording} {'taken out of' if removed else 'was not in'} case {args.case_id}"


def _case_close(lc: LifecycleService, args: argparse.Namespace, actor: str) -> str:
    lc.close_case(actor, args.case_id)
    return f"case {args.case_id} closed: its evidence is released from legal hold (retention applies again)"


def _case_list(lc: LifecycleService, args: argparse.Namespace, actor: str) -> str:
    lines = [f"{'case':<20} {'state':<7} {'opened (UTC)':<21} {'by':<12} title"]
    lines += [safe_text(f"{c.case_id:<20} {c.state:<7} {_when(c.opened_utc_ns):<21} {c.opened_by:<12} {c.title}")
              for c in lc.index.cases()]
    return "\n".join(lines)


def _case_show(lc: LifecycleService, args: argparse.Namespace, actor: str) -> str:
    case = lc.index.case(args.case_id)
    if case is None:
        raise LifecycleError(f"no case {args.case_id!r}")
    head = safe_text(f"case {case.case_id} ({case.state}): {case.title}; opened {_when(case.opened_utc_ns)} "
                     f"by {case.opened_by}")
    return "\n".join([head, _recording_table(lc, lc.index.recordings(case_id=case.case_id))])


# -- lifecycle ---------------------------------------------------------------------------------

def _recording_table(lc: LifecycleService, recs: list[Any]) -> str:
    known = lc.index.categories()
    lines = [f"{'unit/recording':<52} {'recorded (UTC)':<21} {'state':<8} {'hold':<5} {'kept until':<21} categories"]
    for r in recs:
        until = retain_until_ns(r, known)
        lines.append(safe_text(
            f"{r.key:<52} {_when(r.recorded_utc_ns):<21} {r.state:<8} {'yes' if r.held else 'no':<5} "
            f"{_when(until) if until is not None else 'deleted by hand':<21} {', '.join(r.categories) or '-'}"))
    return "\n".join(lines)


def _lifecycle_list(lc: LifecycleService, args: argparse.Namespace, actor: str) -> str:
    recs = lc.index.recordings(args.device_id, args.state)
    if args.json:
        known = lc.index.categories()
        return json.dumps([{"device_id": r.device_id, "recording_id": r.recording_id, "state": r.state,
                            "recorded_utc_ns": r.recorded_utc_ns, "held": r.held, "categories": list(r.categories),
                            "retain_until_ns": retain_until_ns(r, known), "queued_utc_ns": r.queued_utc_ns}
                           for r in recs], indent=2)
    return _recording_table(lc, recs)


def _lifecycle_delete(lc: LifecycleService, args: argparse.Namespace, actor: str) -> str:
    lc.request_deletion(actor, args.device_id, args.recording, args.reason)
    days = lc.limits.queue_s // 86400
    return (f"{args.device_id}/{args.recording} is in the deletion queue: deleted in {days} days unless restored "
            f"(bodycam-hq lifecycle restore)")


def _lifecycle_restore(lc: LifecycleService, args: argparse.Namespace, actor: str) -> str:
    lc.restore(actor, args.device_id, args.recording)
    return (f"{args.device_id}/{args.recording} restored: kept until a category is assigned or it is "
            "queued again by hand")


def _lifecycle_run(lc: LifecycleService, args: argparse.Namespace, actor: str) -> str:
    counts = lc.run_pass()
    return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items())


def _custody_verify(lc: LifecycleService, args: argparse.Namespace, actor: str) -> str:
    report, problems, anchors = lc.anchors.verify()
    if not report.intact:
        raise LifecycleError(report.summary())
    if problems:
        raise LifecycleError("; ".join(problems))
    return f"{report.summary()}; {anchors} anchor(s) in the store agree"


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                data: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Add ``category``, ``case`` and ``lifecycle``; return the nested commands (for -v)."""
    parent = argparse.ArgumentParser(add_help=False, parents=[data])
    parent.add_argument("--store-url", help=STORE_URL_HELP)
    rec = argparse.ArgumentParser(add_help=False)
    rec.add_argument("--device-id", required=True, help="the unit")
    rec.add_argument("--recording", required=True, help="the recording id (bodycam-hq lifecycle list)")
    nested: list[argparse.ArgumentParser] = []

    def command(group: Any, name: str, handler: Handler, help_: str, *parents: argparse.ArgumentParser,
                full: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = group.add_parser(name, parents=[parent, *parents], help=help_,
                                                      description=help_ + ". Exit codes: 0 done; 1 refused.")
        p.set_defaults(func=_run(f"{full} {name}", handler))
        nested.append(p)
        return p

    c = sub.add_parser("category", help="retention categories and their assignment to recordings")
    csub = c.add_subparsers(dest="category_command", required=True, metavar="COMMAND")
    command(csub, "list", _category_list, "list the categories and how long each keeps evidence", full="category")
    p = command(csub, "set", _category_set, "add or change a category (its retention counts from the recorded date)",
                full="category")
    p.add_argument("name", help="the category's name (a-z, 0-9, '-')")
    p.add_argument("--retention", required=True, help="36h, 90d, 12w, 7y, or 'manual' (kept until deleted)")
    p.add_argument("--role", choices=ROLES, help="default: for recordings with no category; marked: given to "
                   "recordings the officer marked on the unit")
    p.add_argument("--doc", help="what the category is for")
    for name, handler, what in (("assign", _category_assign, "assign a category to a recording (the longest "
                                 "retention of its categories wins)"),
                                ("remove", _category_remove, "take a category off a recording")):
        p = command(csub, name, handler, what, rec, full="category")
        p.add_argument("category", help="the category's name")

    k = sub.add_parser("case", help="cases: evidence in an open case is on legal hold")
    ksub = k.add_subparsers(dest="case_command", required=True, metavar="COMMAND")
    p = command(ksub, "open", _case_open, "open a case", full="case")
    p.add_argument("case_id", help="the agency's case number")
    p.add_argument("--title", required=True, help="what the case is about")
    for name, handler, what in (("add", _case_add, "put a recording in a case (legal hold in the index and store)"),
                                ("remove", _case_remove, "take a recording out of a case (its hold ends unless "
                                 "another open case holds it)")):
        p = command(ksub, name, handler, what, rec, full="case")
        p.add_argument("case_id", help="the case number")
    p = command(ksub, "close", _case_close, "close a case: its evidence is released from hold", full="case")
    p.add_argument("case_id", help="the case number")
    command(ksub, "list", _case_list, "list cases", full="case")
    p = command(ksub, "show", _case_show, "show a case and its recordings", full="case")
    p.add_argument("case_id", help="the case number")

    life = sub.add_parser("lifecycle", help="recordings, the deletion queue, restores, the custody ledger")
    lsub = life.add_subparsers(dest="lifecycle_command", required=True, metavar="COMMAND")
    p = command(lsub, "list", _lifecycle_list, "list recordings with their categories, hold and retention",
                full="lifecycle")
    p.add_argument("--device-id", help="only this unit's")
    p.add_argument("--state", choices=RECORDING_STATES, help="only recordings in this state (queued: the queue)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = command(lsub, "delete", _lifecycle_delete, "put a recording in the deletion queue (deleted after 7 days "
                "unless restored)", rec, full="lifecycle")
    p.add_argument("--reason", required=True, help="why it is deleted (kept in the custody ledger)")
    command(lsub, "restore", _lifecycle_restore, "take a recording out of the deletion queue", rec, full="lifecycle")
    command(lsub, "run", _lifecycle_run, "run the lifecycle's periodic pass now (holds, queue, deletions)",
            full="lifecycle")
    command(lsub, "verify", _custody_verify, "walk the custody ledger's hash chain", full="lifecycle")
    return nested


# -- export --case ------------------------------------------------------------------------------

def add_case_export_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--case", help="export this case: every recording it holds, the custody ledger's extract and "
                   "a time-stamped manifest (docs/court-export.md)")
    p.add_argument("--tsa-url", help="RFC 3161 time-stamping authority to stamp the case export's manifest "
                   "(http(s)://...; without it the export has no time stamp)")
    p.add_argument("--tsa-ca", type=Path, help="the authority's root certificate(s), PEM, put in the export for "
                   "bodycam verify")
    p.add_argument("--decrypt-socket", type=Path, help="make the viewing copies with the decrypt component "
                   "(bodycam-hq decryptd) listening here")
    p.add_argument("--hq-key", type=Path, help="make the viewing copies with this private key (default: the keys "
                   "folder's hq.key when it is on this machine)")
    p.add_argument("--no-viewing-copies", action="store_true", help="export the originals only (no MP4s)")


def cmd_case_export(args: argparse.Namespace, keys: Path) -> int:
    """``bodycam-hq export --case CASE --out DIR [--tsa-url URL --tsa-ca PEM]``."""
    if args.device_id is not None or args.from_ or args.to:
        print("bodycam-hq export: --case exports whole recordings; leave out --device-id, --from and --to",
              file=sys.stderr)
        return 2
    actor, target = _actor(), f"case {args.case} -> {args.out}"
    try:
        chain = args.tsa_ca.read_bytes() if args.tsa_ca is not None else None
    except OSError as exc:
        print(f"bodycam-hq export: reading --tsa-ca {args.tsa_ca}: {exc.strerror}", file=sys.stderr)
        return 2
    tsa = TsaClient(args.tsa_url) if args.tsa_url else None
    try:
        decrypter = _decrypter(args, keys)
        signer = None if decrypter is None else ensure_credentials(keys, datetime.datetime.now(datetime.UTC))
    except (KeyFileError, CredentialsError) as exc:
        print(f"bodycam-hq export: {exc}", file=sys.stderr)
        return 2
    with open_index(args.data_dir, args.database_url) as index:
        audit = Auditor(index, "hq-cli", time.time_ns)
        try:
            store = open_evidence_store(args.data_dir, args.store_url)
            lc = lifecycle_service(index, store, time.time_ns, "hq-cli")
            result = export_case(lc, index, store, args.case, args.out, hq_pub=keys / "hq.pub", exported_by=actor,
                                 now_ns=time.time_ns(), tsa=tsa, tsa_chain_pem=chain, decrypter=decrypter,
                                 signer=signer)
        except (ExportError, LifecycleError, StorageError, StoreUrlError, TsaError, OSError) as exc:
            audit.record("export", actor, target, "refused", reason=str(exc))
            print(f"bodycam-hq export: {exc}", file=sys.stderr)
            return 1
        audit.record("export", actor, target, "ok", recordings=result.recordings, entries=result.entries,
                     devices=list(result.devices), timestamped=result.timestamped)
    stamp = "time-stamped (case.json.tsr)" if result.timestamped else "NOT time-stamped (no --tsa-url)"
    print(f"exported case {args.case}: {result.recordings} recording(s), {result.entries} entries of "
          f"{', '.join(result.devices)} to {args.out}; manifest {stamp}")
    if decrypter is None:
        print("no viewing copies" + ("" if args.no_viewing_copies else
                                     ": give --decrypt-socket (bodycam-hq decryptd) or --hq-key to make them"))
    else:
        print(f"viewing copies: {result.viewing_copies} recording(s) as MP4 (H.264 as recorded), with C2PA content "
              f"credentials under {keys / 'export-ca.pem'} (publish it for experts: bodycam verify --c2pa-ca)")
    print(f"check it with: bodycam verify {args.out}")
    return 0


def _decrypter(args: argparse.Namespace, keys: Path) -> Decrypter | None:
    """The decrypt component's client, the given key, the keys folder's key, or None."""
    if args.no_viewing_copies:
        return None
    if args.decrypt_socket is not None:
        return DecryptClient(args.decrypt_socket)
    key = args.hq_key if args.hq_key is not None else keys / "hq.key"
    if args.hq_key is None and not key.is_file():
        return None
    return KeyDecrypter(load_hq_private(key))
