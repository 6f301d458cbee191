"""``bodycam verify``: the offline check a court or a defence expert runs, with public keys only."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TextIO

from cryptography.hazmat.primitives.asymmetric import ed25519

from agent import verify_tlog
from agent.case_verify import check_case, findings_dict, is_case_export, print_findings
from agent.cliargs import device_id
from agent.evidence.anchor import AnchorError, check_anchors, read_anchor, runs
from agent.evidence.chain import Finding
from agent.evidence.keys import (
    KeyFileError,
    fingerprint,
    load_device_public,
    load_hq_private,
    load_receipt_public,
    public_der,
)
from agent.evidence.media_check import check_media
from agent.evidence.verify import BackgroundCopy, Report, find_files, verify_path
from agent.humanize import duration, plural
from agent.textsafe import safe_text

EXIT_CODES = ("exit codes: 0 every check holds; 1 problems found (each printed with its file, seq and reason),\n"
              "or no evidence files; 2 bad usage, a missing path or an unreadable key")
MISMATCH = "manifest signature does not verify"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("verify", help="verify evidence offline (signatures, hashes, chain; content with --hq-key)",
                       description="Verify evidence offline with public keys only: every signature, hash, "
                       "checkpoint and the chain.",
                       epilog=EXIT_CODES)
    p.add_argument("path", type=Path, help="a data dir, a folder of segments, one segment file, or a case export")
    p.add_argument("--device-pub", type=Path, help="the device public key to trust (PEM)")
    p.add_argument("--hq-key", type=Path, help="headquarters' private key: also decrypt and decode the content")
    p.add_argument("--device-id", type=device_id, help="the device id the evidence must belong to")
    p.add_argument("--anchor", type=Path, nargs="+", action="extend", default=[], metavar="FILE",
                   help="a signed heartbeat or receipt: every entry up to its chain head must be present")
    p.add_argument("--hq-pub", type=Path, help="headquarters' hq.pub, to check receipt anchors and log proofs "
                   "(default: receipts/hq.pub beside the evidence)")
    verify_tlog.add_options(p)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--tsa-ca", type=Path, help="a case export: the time-stamping authority's root certificate(s) "
                   "to trust (default: the one shipped in the export)")
    p.add_argument("--c2pa-ca", type=Path, help="a case export: headquarters' published court export root "
                   "(export-ca.pem) to trust for the MP4s' C2PA content credentials (default: the one shipped)")
    p.set_defaults(func=run)


def _find_own_key(path: Path) -> Path | None:
    folder = path.parent if path.is_file() else path
    for candidate in (folder / "device.pub", folder.parent / "device.pub"):
        if candidate.is_file():
            return candidate
    return None


def run(args: argparse.Namespace) -> int:
    out: TextIO = sys.stdout
    path: Path = args.path
    if not path.exists():
        print(f"bodycam verify: {path} does not exist", file=sys.stderr)
        return 2
    if path.is_dir() and is_case_export(path):
        case = check_case(path, args.tsa_ca, decode=check_media, c2pa_ca=args.c2pa_ca)
        if args.json:
            print(json.dumps(findings_dict(case), indent=2, sort_keys=True), file=out)
        else:
            print_findings(out, path, case)
        return 0 if case.ok else 1
    if args.device_pub is not None:
        key_path, key_note = args.device_pub, "given on the command line"
    else:
        found = _find_own_key(path)
        if found is None:
            print(
                "bodycam verify: no --device-pub given and no device.pub beside the evidence; "
                "pass the device public key headquarters enrolled",
                file=sys.stderr,
            )
            return 2
        key_path = found
        key_note = (
            "NOT given: falling back to the device.pub stored with the evidence. This proves the files "
            "agree with that key, not that they come from the unit you expect; pass --device-pub"
        )
    try:
        device_pub = load_device_public(key_path)
        hq_key = load_hq_private(args.hq_key) if args.hq_key is not None else None
        folder = path.parent if path.is_file() else path
        # Only anchors and log proofs need it: a plain check never reads hq.pub.
        anchor_files: list[Path] = getattr(args, "anchor", [])  # options callers before anchors do not set
        needed = bool(anchor_files) or (folder / "tlog").is_dir()
        receipt_pub = _receipt_key(folder, getattr(args, "hq_pub", None)) if needed else None
        anchors = [read_anchor(f, device_pub, receipt_pub) for f in anchor_files]
        log_key, witnesses = verify_tlog.parse_keys(args)
    except (KeyFileError, AnchorError, ValueError) as exc:
        print(f"bodycam verify: {safe_text(str(exc))}", file=sys.stderr)
        return 2
    if not find_files(path):
        print(f"bodycam verify: no evidence files (*.bcs) under {path}", file=sys.stderr)
        return 1

    progress = _progress if sys.stderr.isatty() and not args.json else None
    report = verify_path(
        path,
        device_pub,
        hq_key=hq_key,
        decode=check_media,
        progress=progress,
        expected_device_id=args.device_id,
    )
    for f in check_anchors(anchors, report.hashes, report.device_id):
        report.problems.append(Finding(f.anchor, f.seq, f.reason))
    report.anchored_through = max((a.through for a in anchors), default=None)
    logged = verify_tlog.check_export_log(folder, receipt_pub, log_key, witnesses,
                                          getattr(args, "witness_quorum", 0))
    if logged is not None:
        report.problems.extend(logged.problems)
    fp = fingerprint(public_der(device_pub))
    if args.json:
        doc = report.as_dict()
        doc["anchors"] = [{"file": a.name, "kind": a.kind, "through_seq": a.through} for a in anchors]
        doc["tlog"] = None if logged is None else {"receipts_proven": logged.proven,
                                                   "heartbeats_proven": logged.heartbeats, "origin": logged.origin,
                                                   "size": logged.size, "cosigned_by": logged.cosigned_by,
                                                   "unchecked": logged.unchecked}
        doc["device_key"] = {"path": str(key_path), "fingerprint": fp, "trusted_because": key_note,
                             "matches": not key_mismatch(report)}
        json.dump(doc, out, indent=2)
        out.write("\n")
    else:
        shown = logged is not None and bool(logged.proven or logged.unchecked)
        _print_report(out, path, report, key_path, fp, key_note, hq_key is not None,
                      verify_tlog.describe(logged) if logged is not None and shown else None)
    return 0 if report.ok else 1


def _receipt_key(folder: Path, hq_pub: Path | None) -> ed25519.Ed25519PublicKey | None:
    """Headquarters' receipt key, for receipt anchors and log proofs: ``hq_pub``, else the
    ``receipts/hq.pub`` of an export, else None."""
    if hq_pub is None and (folder / "receipts" / "hq.pub").is_file():
        hq_pub = folder / "receipts" / "hq.pub"
    return load_receipt_public(hq_pub) if hq_pub is not None else None


def _progress(done: int, total: int, name: str) -> None:
    sys.stderr.write(f"\rverifying {done}/{total} {name:<20}")
    if done == total:
        sys.stderr.write("\r" + " " * 48 + "\r")
    sys.stderr.flush()


def _print_report(
    out: TextIO, path: Path, r: Report, key_path: Path, fp: str, key_note: str, decrypted: bool,
    logged: str | None = None,
) -> None:
    print(f"Evidence:    {path} ({plural(r.files, 'file')})", file=out)
    print(f"Device key:  {key_path} (SHA-256 {fp[:16]}...), {key_note}", file=out)
    if key_mismatch(r):
        print("Device:      unknown: no entry is signed by this key", file=out)
        print(f"RESULT: FAILED - the device key does not match this evidence: none of the {plural(r.files, 'file')}"
              " is signed by it; pass the device.pub headquarters enrolled for this unit (--device-pub)", file=out)
        return
    print(f"Device:      {safe_text(r.device_id)}", file=out)
    if r.first_seq is not None:
        print(
            f"Chain:       seq {r.first_seq}..{r.last_seq}: {plural(r.segments, 'segment')}, "
            f"{plural(r.events, 'event')}, {duration(r.footage_ns / 1e9)} of footage",
            file=out,
        )
    for line in background_lines(r.background):
        print(safe_text(line), file=out)  # request ids come from the files
    content = (
        "decrypted, plaintext hashes and decoding checked"
        if decrypted
        else "not decrypted (public check only; add --hq-key)"
    )
    print(f"Content:     {content}", file=out)
    if logged is not None:
        print(safe_text(f"Log:         {logged}"), file=out)  # the origin comes from the export
    for p in r.problems:
        seq = f" (seq {p.seq})" if p.seq is not None else ""
        print(safe_text(f"PROBLEM  {p.name}{seq}: {p.reason}"), file=out)  # names and reasons come from files
    for w in r.warnings:
        seq = f" (seq {w.seq})" if w.seq is not None else ""
        print(safe_text(f"warning  {w.name}{seq}: {w.reason}"), file=out)
    if r.ok:
        print(f"RESULT: OK - every signature, hash and link holds; {proven(r)}", file=out)
    else:
        print(f"RESULT: FAILED - {plural(len(r.problems), 'problem')}", file=out)


def background_lines(copies: list[BackgroundCopy]) -> list[str]:
    """One line per headquarters' request whose range of the background ring is in the set:
    which seqs it became (segments flagged ``background``, format 8.9)."""
    by_request: dict[str, list[int]] = {}
    for c in copies:
        by_request.setdefault(c.request_id or "unknown", []).append(c.seq)
    label = "Background:"
    lines = []
    for request_id, seqs in by_request.items():
        lines.append(f"{label:<12} seq {runs(seqs)}: {plural(len(seqs), 'segment')} of the background ring, "
                     f"copied on headquarters' request {request_id}")
        label = ""
    return lines


def key_mismatch(r: Report) -> bool:
    """No entry verifies with the key given: the wrong key, not tampered evidence."""
    per_file = [p for p in r.problems if p.name != "-"]
    return r.device_id is None and bool(per_file) and all(p.reason.startswith(MISMATCH) for p in per_file)


def proven(r: Report) -> str:
    """What an OK result proves about completeness: the inside of the set always, its ends only
    from genesis and from a final clean shutdown (the text of section 1, "What verification
    does not prove")."""
    inside = f"no entry is missing or out of order from seq {r.first_seq} to seq {r.last_seq}"
    start = "which is the chain's start" if r.first_seq == 0 else f"entries before seq {r.first_seq} are not in the set"
    if r.clean_end:
        end = "the set ends with a clean shutdown"
    elif r.anchored_through is not None:
        end = f"complete up to seq {r.anchored_through}, as the anchors vouch"
    else:
        end = f"the end is NOT proven: entries after seq {r.last_seq} may exist (no final shutdown event)"
    return f"{inside} ({start}); {end}"
