"""``bodycam-hq background``: ask a unit for a range of its background recording (record after the
fact), and list such requests with the unit's signed answers."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from agent.cliargs import device_id
from agent.evidence import canonical
from agent.evidence.keys import KeyFileError, load_receipt_private
from agent.humanize import utc
from agent.textsafe import safe_text
from hq.app import open_index
from hq.audit import Auditor
from hq.cmdutil import actor
from hq.export import ExportError, parse_time
from hq.requests import DEFAULT_TTL_S, RequestError, UnitRequests

KIND = "background.upload"


def _fail(command: str, message: str, code: int = 2) -> int:
    print(f"bodycam-hq background {command}: {message}", file=sys.stderr)
    return code


def cmd_request(args: argparse.Namespace) -> int:
    try:
        start, end = parse_time(args.from_), parse_time(args.to)
    except ExportError as exc:
        return _fail("request", f"--from/--to: {exc}")
    keys: Path = args.keys or args.data_dir / "keys"
    try:
        hq_key = load_receipt_private(keys / "receipt.key")
    except KeyFileError as exc:
        return _fail("request", f"{exc} (requests are signed with headquarters' receipt key; --keys DIR)")

    with open_index(args.data_dir, args.database_url) as index:
        service = UnitRequests(index, hq_key, Auditor(index, "hq-cli", time.time_ns), time.time_ns)
        try:
            request = service.queue(args.unit, KIND, {"from_utc_ns": start, "to_utc_ns": end}, actor(),
                                    args.reason, ttl_s=args.ttl_h * 3600)
        except RequestError as exc:
            return _fail("request", str(exc), 1)
    print(f"request {request.request_id} queued for {args.unit}: background {utc(start)} to {utc(end)}")
    print(f"the unit takes it at its next poll (it expires {utc(request.expires_utc_ns)}); "
          f"`bodycam-hq background list --data-dir {args.data_dir} --unit {args.unit}` shows its answer")
    return 0


def _answer(signed: bytes | None) -> dict[str, Any] | None:
    """The result the unit signed (checked when it was kept), for display."""
    if signed is None:
        return None
    doc = canonical.loads(signed)
    result = doc["result"] if isinstance(doc, dict) else None
    return result if isinstance(result, dict) else None


def cmd_list(args: argparse.Namespace) -> int:
    with open_index(args.data_dir, args.database_url) as index:
        rows = [r for r in index.requests(args.unit) if r.kind == KIND]
    if args.json:
        print(json.dumps([{
            "request_id": r.request_id, "device_id": r.device_id, "params": r.params, "state": r.state,
            "issued_utc_ns": r.issued_utc_ns, "expires_utc_ns": r.expires_utc_ns, "deliveries": r.deliveries,
            "outcome": r.outcome, "result": _answer(r.result)} for r in rows], sort_keys=True))
        return 0
    if not rows:
        print("no background requests" + (f" for {args.unit}" if args.unit else ""))
        return 0
    print(f"{'REQUEST':<32}  {'UNIT':<16}  {'FROM':<20}  {'TO':<20}  {'STATE':<9}  OUTCOME")
    for r in rows:
        result = _answer(r.result) or {}
        detail = result.get("detail", {})
        note = safe_text(str(detail.get("note", ""))) if isinstance(detail, dict) else ""
        print(f"{r.request_id:<32}  {safe_text(r.device_id):<16}  {utc(r.params['from_utc_ns']):<20}  "
              f"{utc(r.params['to_utc_ns']):<20}  {r.state:<9}  {r.outcome or '-'} {note}".rstrip())
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], data: argparse.ArgumentParser) -> None:
    p = sub.add_parser("background", help="ask units for ranges of their background recording",
                       description="Record after the fact: a unit keeps a low-resolution background recording "
                       "for some hours; a supervisor asks for a range, which the unit uploads as evidence.")
    bsub = p.add_subparsers(dest="background_command", required=True, metavar="COMMAND")
    q = bsub.add_parser("request", parents=[data], help="ask a unit to upload a range of its background recording",
                        description="Queue a request, signed by headquarters, for the unit to upload its background "
                        "recording from --from to --to as evidence. Audited with your name and the reason. "
                        "Exit codes: 0 queued; 1 refused (unit not enrolled, bad range); 2 bad usage.")
    q.add_argument("unit", type=device_id, metavar="UNIT", help="the unit's device id")
    q.add_argument("--from", dest="from_", required=True, help="UTC start (ISO 8601 or ns)")
    q.add_argument("--to", required=True, help="UTC end (ISO 8601 or ns)")
    q.add_argument("--reason", required=True, help="why (kept in the audit log with the request)")
    q.add_argument("--ttl-h", type=float, default=DEFAULT_TTL_S / 3600,
                   help=f"hours the unit may still act on it (default {DEFAULT_TTL_S // 3600})")
    q.add_argument("--keys", type=Path, help="keys dir holding receipt.key (default: DATA_DIR/keys)")
    q.set_defaults(func=cmd_request)
    q = bsub.add_parser("list", parents=[data], help="background requests and the units' answers")
    q.add_argument("--unit", type=device_id, help="only this unit's")
    q.add_argument("--json", action="store_true", help="one JSON array")
    q.set_defaults(func=cmd_list)
