"""Listing held evidence and exporting a device's evidence for court or a defence expert.

An export folder holds the segments exactly as received (``<seq>.bcs``), the enrolled
``device.pub``, the receipts (``receipts/<seq>.receipt`` plus ``receipts/hq.pub`` when the keys
are at hand), the newest anchors (``anchors/``: a device-signed heartbeat and a receipt whose
chain heads lie within the export), the transparency log's proofs of the receipts (``tlog/``) and
``export.json``; ``bodycam verify DIR --device-pub
DIR/device.pub --anchor DIR/anchors/*`` checks it, the end of the set included.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.evidence import canonical
from agent.evidence.format import SIGNATURE_LEN, segment_filename
from agent.evidence.note import parse_checkpoint, split
from agent.evidence.tlogproof import chain_head_leaf, encode_inclusion, receipt_leaf
from hq.index import Index
from hq.records import Evidence
from hq.storage import EvidenceStore
from hq.tlog import TransparencyLog


class ExportError(Exception):
    """An export that cannot be made; the message says why."""


def parse_time(text: str) -> int:
    """UTC nanoseconds from ISO 8601 (``2026-09-21T10:00:00Z``; no zone means UTC) or integer ns."""
    if text.isdigit():
        return int(text)
    try:
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ExportError(f"{text!r} is neither ISO 8601 nor UTC nanoseconds") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    delta = when - datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def iso(ns: int) -> str:
    return datetime.datetime.fromtimestamp(ns / 1e9, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def receipt_summary(receipt: bytes | None) -> dict[str, Any] | None:
    """The receipt's fields (unverified: the service signed it and kept it), or None."""
    if receipt is None:
        return None
    doc: dict[str, Any] = canonical.loads(receipt[:-SIGNATURE_LEN])
    return doc


def manifest_flags(manifest: str | None) -> tuple[list[str], str | None]:
    """An entry's flags and, for a copy from the background ring (format 8.9), the request it
    answered, read from the verified manifest the index keeps (nothing for entries held before
    0005, whose manifest it does not keep)."""
    if manifest is None:
        return [], None
    doc = json.loads(manifest)
    flags = [str(f) for f in doc.get("flags") or ()]
    origin = doc.get("background")
    request_id = origin.get("request_id") if isinstance(origin, dict) else None
    return flags, request_id if isinstance(request_id, str) else None


def evidence_rows(index: Index, device_id: str | None, background_only: bool = False) -> list[dict[str, Any]]:
    """Every entry held (and every quarantined upload) of ``device_id`` (None: of all units);
    ``background_only``: only segments copied from a unit's background ring."""
    rows: list[dict[str, Any]] = []
    for e in index.evidence_list(device_id):
        flags, request_id = manifest_flags(e.manifest)
        if background_only and "background" not in flags:
            continue
        r = receipt_summary(e.receipt)
        rows.append(
            {
                "device_id": e.device_id,
                "seq": e.seq,
                "kind": e.kind,
                "flags": flags,
                "background_request": request_id,
                "status": e.status if e.deleted_utc_ns is None else f"deleted {iso(e.deleted_utc_ns)}",
                "recording_id": e.recording_id,
                "size_bytes": e.size_bytes,
                "utc_start": iso(e.utc_start_ns),
                "received_utc": iso(e.received_utc_ns),
                "manifest_sha256": e.manifest_sha256,
                "file_sha256": e.file_sha256,
                "warnings": list(e.warnings),
                "receipt": None
                if r is None
                else {"contiguous_through": r["contiguous_through"], "hq_key": r["hq_key"]},
            }
        )
    for q in [] if background_only else index.quarantined(device_id):
        rows.append(
            {
                "device_id": q.device_id,
                "seq": q.seq,
                "kind": None,
                "flags": [],
                "background_request": None,
                "status": f"quarantined: {q.code}",
                "reason": q.reason,
                "file_sha256": q.file_sha256,
                "received_utc": iso(q.received_utc_ns),
                "location": q.location,
                "receipt": None,
            }
        )
    return rows


@dataclass(frozen=True, slots=True)
class ExportResult:
    out: Path
    entries: int
    first_seq: int | None
    last_seq: int | None
    anchors: tuple[str, ...] = ()  # file names in out/anchors


def export(
    index: Index,
    store: EvidenceStore,
    device_id: str,
    out: Path,
    from_ns: int | None = None,
    to_ns: int | None = None,
    hq_pub: Path | None = None,
    exported_by: str = "",
    now_ns: int = 0,
    tlog: TransparencyLog | None = None,
    entries_only: Sequence[Evidence] | None = None,
) -> ExportResult:
    """Copy a device's held evidence (optionally a time window, or just ``entries_only``) into a
    new folder ``out``."""
    device = index.device(device_id)
    if device is None:
        raise ExportError(f"{device_id} is not enrolled")
    listed = list(entries_only) if entries_only is not None else index.evidence_list(device_id, from_ns, to_ns)
    entries = [e for e in listed if e.deleted_utc_ns is None]
    deleted = [{"seq": e.seq, "manifest_sha256": e.manifest_sha256, "deleted_utc": iso(e.deleted_utc_ns)}
               for e in listed if e.deleted_utc_ns is not None]
    if not entries:
        raise ExportError(f"no evidence of {device_id} in that time window"
                          + (f" ({len(deleted)} entries there were deleted by the lifecycle)" if deleted else ""))
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"{out} exists and is not empty")
    receipts = out / "receipts"
    receipts.mkdir(parents=True, exist_ok=True)
    files = [_copy_entry(store, e, out, receipts) for e in entries]
    (out / "device.pub").write_text(device.public_pem)
    if hq_pub is not None and hq_pub.is_file():
        shutil.copyfile(hq_pub, receipts / "hq.pub")
    chosen = newest_anchors(index, device_id, entries)
    anchors = write_anchors(out / "anchors", chosen)
    proven = write_log_proofs(out / "tlog", tlog, entries, chosen) if tlog is not None else None
    doc = {
        "device_id": device_id,
        "device_key_sha256": device.fingerprint,
        "exported_utc": iso(now_ns),
        "exported_by": exported_by,
        "window": {"from_utc_ns": from_ns, "to_utc_ns": to_ns},
        "files": files,
        "anchors": anchors,
        "tlog": proven,
        "deleted": deleted,  # entries the lifecycle deleted: their hashes, so the gap is explained
        "verify": "bodycam verify DIR --device-pub DIR/device.pub"
        + (" --anchor " + " ".join(f"DIR/anchors/{a['file']}" for a in anchors) if anchors else ""),
    }
    (out / "export.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return ExportResult(out, len(entries), entries[0].seq, entries[-1].seq, tuple(a["file"] for a in anchors))


@dataclass(frozen=True, slots=True)
class AnchorFile:
    name: str
    kind: str
    through_seq: int
    data: bytes
    leaf: bytes | None = None  # a heartbeat's chain-head leaf in the transparency log


def _head_seq(doc: object) -> int | None:
    head = doc.get("chain_head") if isinstance(doc, dict) else None
    seq = head.get("seq") if isinstance(head, dict) else None
    return seq if isinstance(seq, int) else None


def newest_anchors(index: Index, device_id: str, entries: list[Evidence]) -> list[AnchorFile]:
    """The newest signed heartbeat and the newest receipt whose chain heads the export holds
    (an anchor past the export's last entry would vouch for entries it does not carry).
    Heartbeats past the position retention lost their signature and cannot anchor."""
    held = {e.seq: e.manifest_sha256 for e in entries}
    last = max(held)
    found: list[AnchorFile] = []
    for utc_ns, body in reversed(index.heartbeats(device_id)):
        try:
            doc = canonical.loads(body)
        except canonical.CanonicalError:
            continue
        if not isinstance(doc, dict) or "sig" not in doc:
            continue
        seq = _head_seq(doc.get("status"))
        if seq is not None and seq <= last:
            head = doc["status"]["chain_head"]
            leaf = chain_head_leaf(device_id, seq, str(head.get("hash")), body, utc_ns)
            found.append(AnchorFile(f"heartbeat-{utc_ns}.json", "heartbeat", seq, body, leaf))
            break
    for e in reversed(entries):
        summary = receipt_summary(e.receipt)
        seq = _head_seq(summary)
        if e.receipt is not None and seq is not None and seq <= last:
            found.append(AnchorFile(f"receipt-{segment_filename(e.seq)[: -len('.bcs')]}.receipt", "receipt",
                                    max(seq, e.seq), e.receipt))
            break
    return found


def write_anchors(folder: Path, anchors: list[AnchorFile]) -> list[dict[str, Any]]:
    """Write each anchor into ``folder``; what export.json says of them."""
    if not anchors:
        return []
    folder.mkdir()
    for a in anchors:
        (folder / a.name).write_bytes(a.data)
    return [{"file": a.name, "kind": a.kind, "through_seq": a.through_seq} for a in anchors]


def write_log_proofs(folder: Path, tlog: TransparencyLog, entries: list[Evidence],
                     anchors: Sequence[AnchorFile] = ()) -> dict[str, Any] | None:
    """``folder/checkpoint`` (the log's newest cosigned by a witness, else its newest) and, for
    each exported receipt that checkpoint holds, ``folder/<seq>.proof``: its inclusion proof against that checkpoint
    (docs/transparency-log.md). ``bodycam verify`` checks them offline."""
    signed = tlog.cosigned() or tlog.checkpoint()  # a witness's cosignature makes the proofs stronger
    if signed is None:
        return None
    size = parse_checkpoint(split(signed)[0]).size
    folder.mkdir()
    (folder / "checkpoint").write_text(signed, encoding="utf-8")  # what each proof's checkpoint is
    proven = []
    for e in entries:
        index = None if e.receipt is None else tlog.find(e.device_id, "receipt", e.seq)
        if e.receipt is None or index is None or index >= size:
            continue
        if tlog.entries(index, index + 1)[0] != receipt_leaf(e.receipt):
            continue  # the log holds a receipt issued again since; the newest one is exported
        proof = encode_inclusion(index, size, tlog.inclusion(index, size), signed)
        (folder / f"{segment_filename(e.seq)[: -len('.bcs')]}.proof").write_bytes(proof)
        proven.append(e.seq)
    heartbeats = 0
    for a in anchors:
        index = None if a.leaf is None else tlog.find(entries[0].device_id, "chain-head", a.through_seq, a.leaf)
        if a.leaf is None or index is None or index >= size:
            continue
        stem = a.name.rsplit(".", 1)[0]
        (folder / f"{stem}.leaf").write_bytes(a.leaf)
        (folder / f"{stem}.proof").write_bytes(encode_inclusion(index, size, tlog.inclusion(index, size), signed))
        heartbeats += 1
    return {"origin": tlog.origin, "size": size, "receipts_proven": len(proven), "heartbeats_proven": heartbeats}


def _copy_entry(store: EvidenceStore, e: Evidence, out: Path, receipts: Path) -> dict[str, Any]:
    name = segment_filename(e.seq)
    h = hashlib.sha256()
    with store.get(e.device_id, e.seq, e.location) as src, (out / name).open("xb") as dst:
        while block := src.read(1024 * 1024):
            h.update(block)
            dst.write(block)
        dst.flush()
        os.fsync(dst.fileno())
    if h.hexdigest() != e.file_sha256:
        raise ExportError(f"stored seq {e.seq} no longer matches the SHA-256 recorded at ingest: investigate")
    if e.receipt is not None:
        (receipts / f"{name[: -len('.bcs')]}.receipt").write_bytes(e.receipt)
    return {"file": name, "seq": e.seq, "sha256": e.file_sha256, "manifest_sha256": e.manifest_sha256}
