"""``bodycam verify`` on a case's court export (a folder with ``case.json``, made by ``bodycam-hq
export --case``; docs/court-export.md): every file against the manifest's SHA-256, no file
added, the RFC 3161 time-stamp token on the manifest, each custody record's hash and links, and
each unit's evidence as ``bodycam verify`` checks a device export, and each viewing copy against
the packets the unit signed (``agent/copy_verify.py``). Offline, public keys only.

``check_case`` is the check (it returns findings, prints nothing); ``run`` prints them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from agent.copy_verify import CopyFindings, check_copies
from agent.credentials_verify import check_credentials
from agent.evidence.keys import KeyFileError, load_device_public
from agent.evidence.ledger import CUSTODY_DOMAIN, record_hash
from agent.evidence.timestamp import TimestampError, check_timestamp, load_certificates
from agent.evidence.verify import Report, verify_path
from agent.fsutil import file_sha256
from agent.textsafe import safe_text

CASE_MANIFEST = "case.json"
TOKEN = "case.json.tsr"
TSA_CHAIN = "timestamp/tsa-chain.pem"

Decode = Callable[..., Any]


@dataclass
class CaseFindings:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    devices: dict[str, Report] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems and all(r.ok for r in self.devices.values())


def is_case_export(path: Path) -> bool:
    return (path / CASE_MANIFEST).is_file()


def check_case(folder: Path, tsa_ca: Path | None = None, decode: Decode | None = None,
               c2pa_ca: Path | None = None) -> CaseFindings:
    found = CaseFindings()
    raw = (folder / CASE_MANIFEST).read_bytes()
    try:
        doc = json.loads(raw)
        files: dict[str, str] = dict(doc["files"])
    except (ValueError, KeyError, TypeError) as exc:
        found.problems.append(f"{CASE_MANIFEST}: not a case export manifest ({exc})")
        return found
    _check_files(folder, files, found)
    _check_token(folder, raw, tsa_ca, doc, found)
    _check_custody(folder / str(doc.get("custody") or "custody.json"), found)
    for device_id in doc.get("devices", []):
        device_dir = folder / str(device_id)
        try:
            pub = load_device_public(device_dir / "device.pub")
        except KeyFileError as exc:
            found.problems.append(f"{safe_text(str(device_id))}: {exc}")
            continue
        found.devices[str(device_id)] = verify_path(device_dir, pub, decode=decode, expected_device_id=str(device_id))
    copies = CopyFindings()
    check_copies(folder, doc.get("viewing_copies"), {d: r.hashes for d, r in found.devices.items()}, copies)
    check_credentials(folder, doc, c2pa_ca, copies)
    found.problems.extend(copies.problems)
    found.notes.extend(copies.notes)
    return found


def _check_files(folder: Path, files: dict[str, str], found: CaseFindings) -> None:
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    for rel, digest in sorted(files.items()):
        path = folder / rel
        if ".." in Path(rel).parts or not path.is_file():
            found.problems.append(f"{safe_text(rel)}: listed in {CASE_MANIFEST} but missing")
        elif file_sha256(path) != digest:
            found.problems.append(f"{safe_text(rel)}: its SHA-256 is not the one {CASE_MANIFEST} lists (changed)")
    for rel in sorted(present - set(files) - {CASE_MANIFEST, TOKEN}):
        found.problems.append(f"{safe_text(rel)}: not listed in {CASE_MANIFEST} (added after the export)")


def _check_token(folder: Path, raw: bytes, tsa_ca: Path | None, doc: dict[str, Any], found: CaseFindings) -> None:
    token = folder / TOKEN
    if not token.is_file():
        if doc.get("timestamp"):
            found.problems.append(f"{TOKEN}: the manifest says it was time-stamped, the token is missing")
        else:
            found.notes.append("no time stamp: the export's time rests on headquarters' word (exported without a TSA)")
        return
    roots_from = tsa_ca if tsa_ca is not None else folder / TSA_CHAIN
    try:
        roots = load_certificates(roots_from.read_bytes())
        when = check_timestamp(token.read_bytes(), raw, roots)
    except (OSError, TimestampError) as exc:
        found.problems.append(f"{TOKEN}: {exc}")
        return
    trust = ("the root given with --tsa-ca" if tsa_ca is not None else
             f"the root shipped in the export ({TSA_CHAIN}): compare it with the authority's published root, "
             "or pass --tsa-ca")
    found.notes.append(f"time stamp: the manifest existed at {when.isoformat()} (RFC 3161 token checked against "
                       f"{trust})")


def _check_custody(path: Path, found: CaseFindings) -> None:
    try:
        records = json.loads(path.read_bytes())["records"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        found.problems.append(f"{path.name}: the custody extract is unreadable ({exc})")
        return
    before: dict[str, Any] | None = None
    for r in records:
        try:
            digest = record_hash(r["prev_sha256"], r["utc_ns"], r["component"], r["event_type"], r["actor"],
                                 r["target"], r["outcome"], r["detail"], CUSTODY_DOMAIN)
        except (KeyError, TypeError) as exc:
            found.problems.append(f"{path.name}: a record lacks {exc}")
            return
        if digest != r["sha256"]:
            found.problems.append(f"{path.name}: custody record {r['id']} does not hash to its sha256 (changed)")
        if before is not None and r["id"] == before["id"] + 1 and r["prev_sha256"] != before["sha256"]:
            found.problems.append(f"{path.name}: custody record {r['id']} does not link to record {before['id']}")
        before = r
    found.notes.append(f"custody: {len(records)} record(s), each hash holds")


def findings_dict(found: CaseFindings) -> dict[str, Any]:
    """``bodycam verify --json`` on a case export: the same findings as the printed report."""
    return {"ok": found.ok, "problems": [safe_text(p) for p in found.problems], "notes": found.notes,
            "devices": {d: r.as_dict() for d, r in found.devices.items()}}


def print_findings(out: TextIO, folder: Path, found: CaseFindings) -> None:
    print(f"Case export: {folder}", file=out)
    for device_id, report in found.devices.items():
        state = "OK" if report.ok else f"FAILED ({len(report.problems)} problem(s))"
        print(safe_text(f"Unit {device_id}: {report.files} file(s), seq {report.first_seq}..{report.last_seq}: "
                        f"{state} (key: the device.pub in the export)"), file=out)
        for p in report.problems:
            print(safe_text(f"PROBLEM  {device_id}/{p.name}: {p.reason}"), file=out)
    for note in found.notes:
        print(f"note     {note}", file=out)
    for problem in found.problems:
        print(f"PROBLEM  {problem}", file=out)
    print("RESULT: OK - every file, the custody records, the time stamp, each unit's chain and each "
          "viewing copy hold" if found.ok
          else "RESULT: FAILED", file=out)
