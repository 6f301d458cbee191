"""A case's court export (``bodycam-hq export --case``): every recording the case holds, per unit
as the device export makes it (segments exactly as received, ``device.pub``, receipts), the custody
ledger's extract for those recordings, and ``case.json``, the export's manifest (the SHA-256 of
every file in it), with an RFC 3161 time-stamp token on it (``case.json.tsr``) from a configured
authority. ``bodycam verify DIR`` checks all of it offline (``agent/case_verify.py``); the format
is docs/court-export.md.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.evidence.ledger import CUSTODY_DOMAIN
from agent.fsutil import file_sha256
from hq.credentials import CredentialsError, ExportSigner, evidence_assertion, manifest_definition, sign_mp4
from hq.decrypt_client import DecryptClientError
from hq.evidence_service import Decrypter, timeline
from hq.export import ExportError, export, iso
from hq.index import Index
from hq.lifecycle import retain_until_ns
from hq.lifecycle_service import LifecycleService
from hq.records import Evidence
from hq.storage import EvidenceStore, StorageError
from hq.timestamp import TsaClient
from hq.viewing_copy import VIEWING, CopySegment, ViewingCopyError, write_copies

CASE_MANIFEST = "case.json"
TOKEN = "case.json.tsr"
CUSTODY = "custody.json"
TSA_CHAIN = "timestamp/tsa-chain.pem"
C2PA_ROOT = "credentials/export-ca.pem"
FORMAT = "bodycam-case-export-v1"


@dataclass(frozen=True, slots=True)
class CaseExportResult:
    out: Path
    recordings: int
    entries: int
    devices: tuple[str, ...]
    timestamped: bool
    viewing_copies: int = 0


def _files(out: Path) -> Iterator[Path]:
    for path in sorted(out.rglob("*")):
        if path.is_file() and path.relative_to(out).as_posix() not in (CASE_MANIFEST, TOKEN):
            yield path


def export_case(lc: LifecycleService, index: Index, store: EvidenceStore, case_id: str, out: Path, *,
                hq_pub: Path | None, exported_by: str, now_ns: int, tsa: TsaClient | None = None,
                tsa_chain_pem: bytes | None = None, decrypter: Decrypter | None = None,
                signer: ExportSigner | None = None) -> CaseExportResult:
    """Export case ``case_id`` into a new folder ``out``; ExportError says why not. With a
    ``decrypter`` each recording also gets its viewing copies (hq/viewing_copy.py), with ``signer``
    C2PA content credentials on their MP4s (hq/credentials.py)."""
    case = lc.index.case(case_id)
    if case is None:
        raise ExportError(f"no case {case_id!r} (bodycam-hq case list)")
    recordings = lc.index.recordings(case_id=case_id)
    if not recordings:
        raise ExportError(f"case {case_id} holds no recording (bodycam-hq case add)")
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"{out} exists and is not empty")
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    out.chmod(0o700)  # the viewing copies are decrypted footage: the exporting user's alone until handed over
    by_device: dict[str, list[Evidence]] = {}
    for rec in recordings:
        by_device.setdefault(rec.device_id, []).extend(lc.index.entries(rec.device_id, rec.recording_id, deleted=True))
    entries = 0
    for device_id, held in sorted(by_device.items()):
        result = export(index, store, device_id, out / device_id, hq_pub=hq_pub, exported_by=exported_by,
                        now_ns=now_ns, entries_only=sorted(held, key=lambda e: e.seq))
        entries += result.entries
    for rec in recordings:
        lc.custody("export", exported_by, rec.key, case_id=case_id,
                   seqs=[e.seq for e in by_device[rec.device_id] if e.recording_id == rec.recording_id
                         or (e.recording_id is None and rec.recording_id == f"entry-{e.seq}")])
    try:
        copies = [] if decrypter is None else _viewing_copies(index, store, decrypter, signer, recordings, by_device,
                                                              out)
    except ExportError:
        shutil.rmtree(out, ignore_errors=True)  # no export without the viewing copies it was asked for
        raise
    if signer is not None and copies:
        (out / C2PA_ROOT).parent.mkdir(exist_ok=True)
        (out / C2PA_ROOT).write_bytes(signer.root_pem)
    targets = {rec.key for rec in recordings}
    (out / CUSTODY).write_text(json.dumps(_custody_extract(lc, targets), indent=2, sort_keys=True) + "\n")
    if tsa_chain_pem is not None:
        (out / TSA_CHAIN).parent.mkdir(exist_ok=True)
        (out / TSA_CHAIN).write_bytes(tsa_chain_pem)
    known = lc.index.categories()
    doc = {
        "format": FORMAT,
        "case": {"case_id": case.case_id, "title": case.title, "state": case.state,
                 "opened_utc": iso(case.opened_utc_ns), "opened_by": case.opened_by},
        "exported_utc": iso(now_ns),
        "exported_by": exported_by,
        "recordings": [{"device_id": r.device_id, "recording_id": r.recording_id,
                        "recorded_utc": iso(r.recorded_utc_ns), "categories": list(r.categories),
                        "kept_until_utc": None if (u := retain_until_ns(r, known)) is None else iso(u)}
                       for r in recordings],
        "devices": sorted(by_device),
        "files": {p.relative_to(out).as_posix(): file_sha256(p) for p in _files(out)},
        "custody": CUSTODY,
        "viewing_copies": copies if decrypter is not None else None,
        "content_credentials": {"root": C2PA_ROOT} if signer is not None and copies else None,
        "timestamp": TOKEN if tsa is not None else None,
        "verify": "bodycam verify DIR (add --tsa-ca FILE to trust the time-stamping authority's own root)",
    }
    manifest = json.dumps(doc, indent=2, sort_keys=True).encode("utf-8") + b"\n"
    (out / CASE_MANIFEST).write_bytes(manifest)
    if tsa is not None:
        try:
            (out / TOKEN).write_bytes(tsa.stamp(manifest))
        except Exception:
            shutil.rmtree(out, ignore_errors=True)  # an export promised a time stamp: none without it
            raise
    return CaseExportResult(out, len(recordings), entries, tuple(sorted(by_device)), tsa is not None, len(copies))


def _viewing_copies(index: Index, store: EvidenceStore, decrypter: Decrypter, signer: ExportSigner | None,
                    recordings: list[Any], by_device: dict[str, list[Evidence]], out: Path) -> list[dict[str, Any]]:
    """Each recording's viewing copies; what case.json lists of them."""
    made: list[dict[str, Any]] = []
    for rec in recordings:
        held = [e for e in by_device[rec.device_id] if e.recording_id == rec.recording_id and e.deleted_utc_ns is None]
        placed = timeline(sorted(held, key=lambda e: e.seq))
        segments = [CopySegment(s.seq, s.offset_ms, s.manifest, s.entry.manifest_sha256) for s in placed]
        entry = {s.seq: s.entry for s in placed}
        try:
            record = write_copies(out / rec.device_id / VIEWING, rec.device_id, rec.recording_id, segments,
                                  _reader(store, decrypter, rec.device_id, entry))
            if record is not None and signer is not None:
                _sign(index, out / rec.device_id, record, entry, signer)
        except (ViewingCopyError, DecryptClientError, StorageError, CredentialsError) as exc:
            raise ExportError(f"viewing copy of {rec.device_id}/{rec.recording_id}: {exc}") from exc
        if record is not None:
            made.append({"device_id": rec.device_id, "recording_id": rec.recording_id,
                         "record": f"{rec.device_id}/{VIEWING}/{rec.recording_id}.json"})
    return made


def _custody_extract(lc: LifecycleService, targets: set[str]) -> dict[str, Any]:
    """The custody records of ``targets`` as stored (each checkable on its own: its hash covers its
    fields and its prev), with the ledger's head and newest anchor at the time of the export."""
    records = [r for r in lc.index.custody_log() if r.target in targets]
    head = lc.index.custody_head()
    anchor = lc.anchors.newest()
    return {
        "format": "bodycam-custody-extract-v1",
        "domain": CUSTODY_DOMAIN.decode("ascii").strip(),
        "records": [{"id": r.id, "utc_ns": r.utc_ns, "component": r.component, "event_type": r.event_type,
                     "actor": r.actor, "target": r.target, "outcome": r.outcome,
                     "detail": json.dumps(r.detail, sort_keys=True), "prev_sha256": r.prev_sha256,
                     "sha256": r.sha256} for r in records],
        "ledger_head": None if head is None else {"id": head[0], "sha256": head[1]},
        "anchor": None if anchor is None else {"utc_ns": anchor.utc_ns, "last_id": anchor.last_id,
                                               "head_sha256": anchor.head_sha256},
    }


def _reader(store: EvidenceStore, decrypter: Decrypter, device_id: str,
            entries: dict[int, Evidence]) -> Callable[[CopySegment], bytes]:
    """A segment's plaintext, decrypted from the store and checked against the hash the unit signed."""
    def plaintext(seg: CopySegment) -> bytes:
        e = entries[seg.seq]
        recovered = "recovered" in (seg.manifest.get("flags") or ())
        want = None if recovered else str(seg.manifest["plaintext"]["sha256"])
        with store.get(device_id, e.seq, e.location) as src:
            return decrypter.segment(src, e.size_bytes, device_id=device_id, seq=e.seq,
                                     plaintext_sha256=want, recovered=recovered)
    return plaintext


def _sign(index: Index, device_dir: Path, record: dict[str, Any], entries: dict[int, Evidence],
          signer: ExportSigner) -> None:
    """C2PA content credentials on the recording's MP4s: the camera copy (repackaged, not
    re-encoded) and the colour-mapped thermal picture (transcoded)."""
    device = index.device(str(record["device_id"]))
    fp = device.fingerprint if device is not None else ""
    receipts = {seq: e.receipt for seq, e in entries.items()}
    files = [(str(record["video"]), "camera", "c2pa.repackaged")]
    if record.get("thermal"):
        files.append((str(record["thermal"]["colour_mapped"]), "thermal-colour-mapped", "c2pa.transcoded"))
    for name, kind, action in files:
        evidence = evidence_assertion(device_dir, record, receipts, fp, name, kind)
        title = f"{record['device_id']} recording {record['recording_id']} ({kind})"
        sign_mp4(device_dir / VIEWING / name, signer, manifest_definition(title, record["clock"]["utc_start"],
                                                                          evidence, action))
