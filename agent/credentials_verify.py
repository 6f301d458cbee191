"""``bodycam verify`` on a case export's C2PA content credentials (docs/court-export.md, "Content
credentials"): each MP4 is read with c2pa-python's ``Reader`` (the C2PA reference implementation)
trusting only the export CA's root (the one given with ``--c2pa-ca``, else the one shipped in the
export), and its bodycam assertion must name the segments, the unit's signatures and the receipts
that are in the export. c2pa-python is imported lazily (the ``hq`` extra): without it the
credentials are reported NOT checked, never as checked.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from agent.copy_verify import CopyFindings
from agent.evidence.format import segment_filename
from agent.evidence.manifest import ManifestError, parse_manifest_record
from agent.evidence.segment import SegmentError, scan
from agent.textsafe import safe_text

ASSERTION = "org.bodycam.evidence"


def check_credentials(folder: Path, doc: dict[str, Any], c2pa_ca: Path | None, found: CopyFindings) -> None:
    listed = doc.get("viewing_copies") or []
    if not listed:
        return
    creds = doc.get("content_credentials")
    if not isinstance(creds, dict):
        found.problems.append("case.json: the viewing copies carry no content credentials")
        return
    try:
        import c2pa
    except ImportError:
        found.notes.append("C2PA content credentials NOT checked: c2pa-python is missing (pip install 'bodycam[hq]')")
        return
    root_from = c2pa_ca if c2pa_ca is not None else folder / str(creds.get("root"))
    try:
        anchors = root_from.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        found.problems.append(safe_text(f"{root_from}: the C2PA root is unreadable ({exc})"))
        return
    context = c2pa.Context.from_dict({"verify": {"verify_trust": True}, "trust": {"trust_anchors": anchors}})
    checked = 0
    for entry in listed:
        rel = Path(str(entry.get("record", "")))
        try:
            record = json.loads((folder / rel).read_bytes())
        except (OSError, ValueError):
            continue  # copy_verify names it
        names = [str(record["video"])] + ([str(record["thermal"]["colour_mapped"])] if record.get("thermal") else [])
        for name in names:
            path = folder / rel.parent / name
            shown = (rel.parent / name).as_posix()
            evidence = _read(c2pa, context, path, shown, found)
            if evidence is not None:
                _compare(folder / rel.parent.parent, record, evidence, name, shown, found)
                checked += 1
    trust = ("the root given with --c2pa-ca" if c2pa_ca is not None else
             f"the root shipped in the export ({creds.get('root')}): compare it with headquarters' published "
             "export root, or pass --c2pa-ca")
    if checked:
        found.notes.append(f"content credentials: {checked} MP4(s) validated by the C2PA reader, trusted under {trust}")


def _read(c2pa: Any, context: Any, path: Path, shown: str, found: CopyFindings) -> dict[str, Any] | None:
    try:
        with path.open("rb") as fh, c2pa.Reader("video/mp4", fh, context=context) as reader:
            state = reader.get_validation_state()
            results = reader.get_validation_results() or {}
            manifest = reader.get_active_manifest() or {}
    except OSError as exc:
        found.problems.append(safe_text(f"{shown}: unreadable ({exc})"))
        return None
    except c2pa.C2paError as exc:
        text = str(exc)
        why = "no C2PA content credentials (removed)" if "ManifestNotFound" in type(exc).__name__ + text \
            else f"its C2PA content credentials do not read ({text[:200]})"
        found.problems.append(safe_text(f"{shown}: {why}"))
        return None
    if state != "Trusted":
        failures = [f"{f.get('code')}: {f.get('explanation', '')}"[:160]
                    for f in (results.get("activeManifest") or {}).get("failure", [])]
        found.problems.append(safe_text(f"{shown}: C2PA validation says {state}"
                                        + (f" ({'; '.join(failures)})" if failures else "")))
        return None
    for a in manifest.get("assertions") or ():
        if a.get("label") == ASSERTION and isinstance(a.get("data"), dict):
            data: dict[str, Any] = a["data"]
            return data
    found.problems.append(safe_text(f"{shown}: its content credentials lack the {ASSERTION} assertion"))
    return None


def _compare(device_dir: Path, record: dict[str, Any], evidence: dict[str, Any], name: str, shown: str,
             found: CopyFindings) -> None:
    """The assertion must name this file and the export's segments, signatures and receipts."""
    want = [int(s["seq"]) for s in record["segments"]]
    got = evidence.get("segments") or []
    if evidence.get("file") != name or [s.get("seq") for s in got] != want:
        found.problems.append(safe_text(f"{shown}: its content credentials are for another file or other segments"))
        return
    for s in got:
        seq = int(s["seq"])
        try:
            with (device_dir / segment_filename(seq)).open("rb") as fh:
                rec = scan(fh).manifest_record
            signed = parse_manifest_record(rec) if rec is not None else None
        except (OSError, SegmentError, ManifestError):
            signed = None
        if signed is None or s.get("manifest_sha256") != signed.hash or \
                s.get("unit_signature") != base64.b64encode(signed.signature).decode():
            found.problems.append(safe_text(f"{shown}: its content credentials bind another seq {seq} than the "
                                            "export's (manifest or unit signature)"))
            continue
        receipt = device_dir / "receipts" / f"{segment_filename(seq)[:-4]}.receipt"
        have = base64.b64encode(receipt.read_bytes()).decode() if receipt.is_file() else None
        if s.get("receipt") != have:
            found.problems.append(safe_text(f"{shown}: its content credentials bind another receipt for seq {seq}"))
