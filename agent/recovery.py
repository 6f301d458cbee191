"""Recovery before the unit reports ready: salvage what a power cut left, reconcile the index.

Nothing is ever deleted here. A partial segment is cut after its last complete record and
sealed as a ``recovered`` chain entry; a file that cannot be explained is moved to
``quarantine/`` and reported; files the index lacks are indexed; index rows whose file is
gone are reported.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.chainlog import ChainLog
from agent.evidence.format import PARTIAL_SUFFIX, SEGMENT_SUFFIX, segment_filename
from agent.evidence.manifest import ManifestError, SignedManifest, parse_manifest_record
from agent.evidence.segment import Salvage, plan_salvage, scan
from agent.fsutil import publish_new
from agent.store import Store

log = logging.getLogger(__name__)


@dataclass
class RecoveryReport:
    recovered: list[int] = field(default_factory=list)
    completed: list[int] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)
    indexed: list[int] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)
    attested_chunks: int = 0
    salvaged_chunks: int = 0

    @property
    def anything(self) -> bool:
        return bool(self.recovered or self.completed or self.quarantined or self.indexed or self.missing)

    def as_detail(self) -> dict[str, Any]:
        return {
            "recovered_seqs": self.recovered,
            "completed_seqs": self.completed,
            "quarantined_files": self.quarantined,
            "indexed_seqs": self.indexed,
            "missing_seqs": self.missing,
            "salvaged_chunks": self.salvaged_chunks,
            "attested_chunks": self.attested_chunks,
        }


def _quarantine(data_dir: Path, path: Path, reason: str, store: Store, report: RecoveryReport) -> None:
    qdir = data_dir / "quarantine"
    qdir.mkdir(mode=0o700, exist_ok=True)
    target = qdir / path.name
    n = 0
    while target.exists():  # an earlier file of that name was quarantined: keep both
        n += 1
        target = qdir / f"{path.name}.{n}"
    publish_new(path, target)
    report.quarantined.append(path.name)
    store.audit("recovery", "quarantine", path.name, "ok", reason=reason)
    log.error("quarantined %s: %s (kept in %s)", path.name, reason, qdir)


def _stats(paths: Iterable[Path]) -> Iterator[os.stat_result]:
    for p in paths:
        try:
            yield p.stat()
        except OSError:
            continue


def recover(data_dir: Path, chain: ChainLog, store: Store) -> RecoveryReport:
    """Run once at start, before any new chain entry of this boot."""
    report = RecoveryReport()
    seg_dir = data_dir / "segments"
    _index_orphans(data_dir, chain, store, report)
    salvageable: list[tuple[int, Path, Salvage, dict[str, Any]]] = []
    sealed_inodes = {(st.st_dev, st.st_ino) for st in _stats(seg_dir.glob(f"*{SEGMENT_SUFFIX}"))}
    for path in sorted(seg_dir.glob(f"*{PARTIAL_SUFFIX}")):
        st = path.stat()
        if (st.st_dev, st.st_ino) in sealed_inodes:
            # a crash between link and unlink while publishing: the sealed name holds these very bytes
            path.unlink()
            store.audit("recovery", "drop-second-name", path.name, "ok", reason="same file as a sealed entry")
            continue
        with path.open("rb") as fh:
            s = scan(fh)
        size = path.stat().st_size
        if s.manifest_record is not None:
            _complete_sealed(data_dir, path, s.manifest_record, chain, store, report)
            continue
        salvage = plan_salvage(s, size)
        if salvage is None or s.header is None:
            _quarantine(data_dir, path, "no readable segment header: nothing was recorded in it", store, report)
            continue
        if salvage.chunks == 0:
            _quarantine(data_dir, path, "the segment had not received any media yet", store, report)
            continue
        started = s.header.get("started") or {}
        salvageable.append((int(started.get("mono_ns") or 0), path, salvage, s.header))
    for _, path, salvage, header in sorted(salvageable, key=lambda item: item[0]):
        signed = chain.seal_salvaged(path, salvage, header)
        report.recovered.append(signed.seq)
        report.salvaged_chunks += salvage.chunks
        report.attested_chunks += salvage.attested_chunks
        store.audit(
            "recovery",
            "salvage",
            segment_filename(signed.seq),
            "ok",
            chunks=salvage.chunks,
            attested_chunks=salvage.attested_chunks,
            dropped_tail_bytes=salvage.dropped_bytes,
        )
    _report_missing(data_dir, store, report)
    return report


def _complete_sealed(
    data_dir: Path, path: Path, record: bytes, chain: ChainLog, store: Store, report: RecoveryReport
) -> None:
    """A partial file that already carries its manifest: the crash came between sealing and renaming."""
    try:
        signed = parse_manifest_record(record)
    except ManifestError as exc:
        _quarantine(data_dir, path, f"manifest unreadable: {exc}", store, report)
        return
    if signed.seq != chain.next_seq or signed.manifest["prev"] != chain.head_hash:
        _quarantine(data_dir, path, f"sealed as seq {signed.seq}, which does not extend the chain", store, report)
        return
    final = path.parent / segment_filename(signed.seq)
    publish_new(path, final)
    _index(store, chain, signed, final)
    report.completed.append(signed.seq)
    store.audit("recovery", "complete-seal", final.name, "ok")


def _index(store: Store, chain: ChainLog, signed: SignedManifest, path: Path) -> None:
    m = signed.manifest
    t = m["time"]
    rel = f"segments/{path.name}"
    if m["type"] == "event":
        store.record_event_entry(
            signed.seq,
            device_id=m["device_id"],
            boot_id=m["boot_id"],
            path=rel,
            recording_id=m["detail"].get("recording_id"),
            mono_ns=t["mono_start_ns"],
            utc_ns=t["utc_start_ns"],
            manifest_sha256=signed.hash,
            size_bytes=path.stat().st_size,
            flags=m["flags"],
        )
    else:
        store.record_segment_entry(
            signed.seq,
            device_id=m["device_id"],
            boot_id=m["boot_id"],
            path=rel,
            recording_id=m.get("recording_id"),
            mono_start_ns=t["mono_start_ns"],
            mono_end_ns=t["mono_end_ns"],
            utc_start_ns=t["utc_start_ns"],
            utc_end_ns=t["utc_end_ns"],
            manifest_sha256=signed.hash,
            ciphertext_sha256=m["ciphertext"]["sha256"],
            size_bytes=path.stat().st_size,
            chunks=m["ciphertext"]["chunks"],
            flags=m["flags"],
            marks=len(m.get("marks", [])),
            priority=1 if m["flags"] else 0,
        )
    chain.head_seq, chain.head_hash = signed.seq, signed.hash


def _index_orphans(data_dir: Path, chain: ChainLog, store: Store, report: RecoveryReport) -> None:
    """Index sealed files the index lacks (a crash between the rename and the index update)."""
    stored = store.chain_head(chain.device_id)
    stored_seq = stored[0] if stored is not None else -1
    for path in sorted((data_dir / "segments").glob(f"*{SEGMENT_SUFFIX}")):
        try:
            seq = int(path.stem)
        except ValueError:
            continue
        if seq <= stored_seq or store.segment(seq) is not None:
            continue
        with path.open("rb") as fh:
            s = scan(fh)
        if s.manifest_record is None:
            continue
        try:
            signed = parse_manifest_record(s.manifest_record)
        except ManifestError as exc:
            log.error("cannot index %s: %s", path.name, exc)
            continue
        _index(store, chain, signed, path)
        report.indexed.append(seq)
        store.audit("recovery", "index", path.name, "ok", reason="sealed file was not indexed (crash after rename)")


def _report_missing(data_dir: Path, store: Store, report: RecoveryReport) -> None:
    """Index rows whose file is gone: never silently dropped, always reported."""
    for row in store.segments():
        if row.state in ("sealed", "uploading") and not (data_dir / row.path).exists():
            report.missing.append(row.seq)
            store.audit("recovery", "missing", row.path, "failed", reason="indexed evidence file is gone")
            log.error("indexed evidence %s is missing from disk", row.path)
