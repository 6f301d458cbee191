"""The device's hash chain on local storage: events are appended at once, segments when sealed.

Files: ``segments/<uuid>.part`` while a segment is written, renamed to ``segments/<seq>.bcs``
when sealed (after an fsync of the file), then the directory is synced and the store indexes
the entry and moves the chain head in one transaction. A sealed file is never opened for writing
again, and no rename or write here can replace one (``fsutil.publish_new``): an entry whose
sequence number is already on disk fails with EEXIST instead of overwriting evidence.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.evidence.format import GENESIS_PREV, PARTIAL_SUFFIX, SEGMENT_SUFFIX, segment_filename
from agent.evidence.keys import HqPublicKey
from agent.evidence.manifest import ManifestError, SignedManifest, parse_manifest_record
from agent.evidence.segment import (
    Salvage,
    SealResult,
    SegmentWriter,
    plan_salvage,
    reseal_copy,
    scan,
    seal_metadata,
    seal_salvaged,
    write_event,
)
from agent.fserrors import is_disk_full
from agent.fsutil import create_new_bytes, fsync_dir, no_room, publish_new, retry_when_full
from agent.segfile import FileOpener, OpenSegment, OsSegmentFile, SegmentFile
from agent.store import Store
from hal.clock import Clock
from hal.keystore import KeyStore

log = logging.getLogger(__name__)

__all__ = ["ChainLog", "FileOpener", "OpenSegment", "OsSegmentFile", "SegmentFile"]


class ChainLog:
    """Appends entries to one device's chain. Not thread-safe: one thread (the recorder) owns it.

    ``make_room`` frees space when the disk is full (see :mod:`agent.reserve`): an event, or the
    manifest that seals what a failed segment left, is written again after it; footage never is.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        signer: KeyStore,
        hq_public: HqPublicKey,
        device_id: str,
        boot_id: str,
        firmware: str,
        config_sha256: str,
        store: Store,
        clock: Clock,
        chunk_bytes: int,
        opener: FileOpener = OsSegmentFile,
        make_room: Callable[[], bool] = no_room,
    ) -> None:
        self.dir = data_dir / "segments"
        self._make_room = make_room
        self._opener = opener
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._data_dir = data_dir
        self._signer = signer
        self._hq_public = hq_public
        self.device_id = device_id
        self.boot_id = boot_id
        self._firmware = firmware
        self._config_sha256 = config_sha256
        self._store = store
        self._clock = clock
        self._chunk_bytes = chunk_bytes
        self.head_seq, self.head_hash = self._find_head()
        self._unindexed: deque[tuple[int, Callable[[], None]]] = deque()  # on disk, index writes pending
        self.gnss_offset_ns: int | None = None  # unit UTC minus GNSS time, from the latest fix

    # -- head ----------------------------------------------------------------------------------

    def _find_head(self) -> tuple[int, str]:
        """The chain head: the store's, unless a newer sealed file exists (a crash after rename)."""
        stored = self._store.chain_head(self.device_id)
        seq, head = stored if stored is not None else (-1, GENESIS_PREV)
        newest = self._newest_file()
        if newest is not None and newest.seq > seq:
            log.warning("chain head from files (seq %d) is ahead of the index (seq %d)", newest.seq, seq)
            return newest.seq, newest.hash
        return seq, head

    def _newest_file(self) -> SignedManifest | None:
        for path in sorted(self.dir.glob(f"*{SEGMENT_SUFFIX}"), reverse=True):
            try:
                with path.open("rb") as fh:
                    result = scan(fh)
                if result.manifest_record is not None:
                    return parse_manifest_record(result.manifest_record)
            except (OSError, ManifestError) as exc:
                log.error("cannot read %s while finding the chain head: %s", path.name, exc)
        return None

    @property
    def next_seq(self) -> int:
        return self.head_seq + 1

    def time_fields(self, mono_start: int, mono_end: int, utc_start: int, utc_end: int) -> dict[str, Any]:
        q = self._clock.quality()
        fields: dict[str, Any] = {
            "mono_start_ns": mono_start,
            "mono_end_ns": mono_end,
            "signed_mono_ns": self._clock.monotonic_ns(),
            "utc_start_ns": utc_start,
            "utc_end_ns": utc_end,
            "source": q.source.value,
            "synced": q.synced,
            "uncertainty_ns": q.uncertainty_ns,
        }
        if self.gnss_offset_ns is not None:
            fields["gnss_offset_ns"] = self.gnss_offset_ns
        return fields

    def _index(self, seq: int, record: Callable[[], None]) -> None:
        """Index entry ``seq``, already on disk under its final name and the chain head.

        Once published the entry is part of the chain, whatever the index says: when the disk is
        full (and the reserve spent) its index row waits, and every later entry's with it, so the
        index stays in chain order; the next entry retries them, and what is still waiting at the
        next start is indexed by recovery (a sealed file ahead of the index). Before, a failed
        index write left the head behind a published file, and every later entry of this run
        failed on that sequence number."""
        self._unindexed.append((seq, record))
        while self._unindexed:
            pending, write = self._unindexed[0]
            try:
                write()
            except Exception as exc:
                if not is_disk_full(exc):
                    self._unindexed.clear()
                    raise
                log.error("chain: seq %d is sealed on disk but not indexed yet (%s); %d entries wait",
                          pending, exc, len(self._unindexed))
                return
            self._unindexed.popleft()

    # -- events --------------------------------------------------------------------------------

    def event(
        self,
        name: str,
        detail: dict[str, Any] | None = None,
        *,
        flags: list[str] | None = None,
        recording_id: str | None = None,
        sealed_meta: dict[str, Any] | None = None,
    ) -> SignedManifest:
        """Sign, write durably and index one event entry."""
        seq = self.next_seq
        mono, utc = self._clock.monotonic_ns(), self._clock.utc_ns()
        full_detail = dict(detail or {})
        if recording_id is not None:
            full_detail["recording_id"] = recording_id
        buf = io.BytesIO()
        signed = write_event(
            buf,
            signer=self._signer,
            device_id=self.device_id,
            seq=seq,
            boot_id=self.boot_id,
            prev=self.head_hash,
            event=name,
            detail=full_detail,
            firmware=self._firmware,
            config_sha256=self._config_sha256,
            time=self.time_fields(mono, mono, utc, utc),
            flags=flags,
            sealed=seal_metadata(sealed_meta, self._hq_public, self.device_id, seq) if sealed_meta else None,
        )
        name_ = segment_filename(seq)
        retry_when_full(lambda: create_new_bytes(self.dir / name_, buf.getvalue(), mode=0o600), self._make_room)
        self.head_seq, self.head_hash = seq, signed.hash
        self._index(seq, functools.partial(
            self._store.record_event_entry,
            seq,
            device_id=self.device_id,
            boot_id=self.boot_id,
            path=f"segments/{name_}",
            recording_id=recording_id,
            mono_ns=mono,
            utc_ns=utc,
            manifest_sha256=signed.hash,
            size_bytes=len(buf.getvalue()),
            flags=flags or [],
            priority=1 if name in ("mark", "recovered-after-power-loss") else 0,
        ))
        log.info("chain: seq %d event %s %s", seq, name, full_detail or "")
        return signed

    # -- segments ------------------------------------------------------------------------------

    def open_segment(self, mono_start_ns: int, utc_start_ns: int, recording_id: str | None = None) -> OpenSegment:
        segment_id = str(uuid.uuid4())
        path = self.dir / f"{segment_id}{PARTIAL_SUFFIX}"
        fh = self._opener(path)
        fsync_dir(self.dir)
        writer = SegmentWriter(
            fh,
            signer=self._signer,
            hq_public=self._hq_public,
            device_id=self.device_id,
            boot_id=self.boot_id,
            segment_id=segment_id,
            chunk_bytes=self._chunk_bytes,
            sync=fh.sync,
            started={"mono_ns": mono_start_ns, "utc_ns": utc_start_ns, "recording_id": recording_id},
        )
        return OpenSegment(segment_id, path, fh, writer, mono_start_ns, utc_start_ns, mono_start_ns)

    def seal(
        self,
        seg: OpenSegment,
        *,
        mono_end_ns: int,
        utc_end_ns: int,
        fields: dict[str, Any],
        flags: list[str],
        sealed_meta: dict[str, Any] | None,
        priority: int = 0,
    ) -> SealResult:
        """Finish the segment as the next chain entry, rename it into place and index it."""
        seq = self.next_seq
        result = seg.writer.finish(
            seq=seq,
            prev=self.head_hash,
            fields=fields,
            firmware=self._firmware,
            config_sha256=self._config_sha256,
            time=self.time_fields(seg.mono_start_ns, mono_end_ns, seg.utc_start_ns, utc_end_ns),
            flags=flags,
            sealed_meta=sealed_meta,
        )
        seg.fh.close()
        final = self.dir / segment_filename(seq)
        publish_new(seg.path, final)
        self.head_seq, self.head_hash = seq, result.signed.hash
        self._index(seq, functools.partial(
            self._store.record_segment_entry,
            seq,
            device_id=self.device_id,
            boot_id=self.boot_id,
            path=f"segments/{final.name}",
            recording_id=fields.get("recording_id"),
            mono_start_ns=seg.mono_start_ns,
            mono_end_ns=mono_end_ns,
            utc_start_ns=seg.utc_start_ns,
            utc_end_ns=utc_end_ns,
            manifest_sha256=result.signed.hash,
            ciphertext_sha256=result.signed.manifest["ciphertext"]["sha256"],
            size_bytes=result.bytes_total,
            chunks=result.chunks,
            flags=flags,
            marks=len(fields.get("marks", [])),
            priority=priority,
        ))
        return result

    def seal_salvaged(self, path: Path, salvage: Salvage, header: dict[str, Any]) -> SignedManifest:
        """Seal a partial file left by a power loss as the next chain entry, flagged ``recovered``.

        The file is cut after its last complete record, the manifest is appended and synced,
        and the file is renamed into place and indexed, like any sealed segment.
        """
        seq = self.next_seq
        started = header.get("started") or {}
        mono_start = int(started.get("mono_ns") or 0)
        utc_start = int(started.get("utc_ns") or 0)
        mono_end = max(mono_start, salvage.attested_mono_ns or mono_start)
        utc_end = utc_start + (mono_end - mono_start)
        recording_id = started.get("recording_id")
        time = self.time_fields(mono_start, mono_end, utc_start, utc_end)
        time["synced"] = False  # the clock's state when this was recorded is unknown now
        fields: dict[str, Any] = {
            "recording_id": recording_id,
            "trigger": "recovered",
            "container": "matroska",
            "tracks": [],
            "marks": [],
        }

        def append_manifest() -> SignedManifest:
            # truncating first makes a second try after a full disk start from the same bytes
            with path.open("r+b") as fh:
                fh.truncate(salvage.keep_bytes)
                fh.seek(salvage.keep_bytes)
                signed = seal_salvaged(
                    fh,
                    salvage,
                    header,
                    signer=self._signer,
                    hq_public=self._hq_public,
                    seq=seq,
                    prev=self.head_hash,
                    fields=fields,
                    firmware=self._firmware,
                    config_sha256=self._config_sha256,
                    time=time,
                    flags=["recovered", "clock-unsynced"],
                )
                fh.flush()
                os.fsync(fh.fileno())
            return signed

        signed = retry_when_full(append_manifest, self._make_room)
        final = self.dir / segment_filename(seq)
        publish_new(path, final)
        self.head_seq, self.head_hash = seq, signed.hash
        self._index(seq, functools.partial(
            self._store.record_segment_entry,
            seq,
            device_id=self.device_id,
            boot_id=str(header["boot_id"]),
            path=f"segments/{final.name}",
            recording_id=recording_id,
            mono_start_ns=mono_start,
            mono_end_ns=mono_end,
            utc_start_ns=utc_start,
            utc_end_ns=utc_end,
            manifest_sha256=signed.hash,
            ciphertext_sha256=salvage.prefix_sha256,
            size_bytes=final.stat().st_size,
            chunks=salvage.chunks,
            flags=["clock-unsynced", "recovered"],
            marks=0,
            priority=1,
        ))
        log.warning(
            "recovered seq %d from %s: %d chunks (%d attested by checkpoint), %.1f s",
            seq,
            path.name,
            salvage.chunks,
            salvage.attested_chunks,
            (mono_end - mono_start) / 1e9,
        )
        return signed

    def copy_in(self, src: Path, ring: SignedManifest, background: dict[str, Any]) -> SignedManifest:
        """Copy a background-ring segment into this chain as its next entry, flagged ``background``
        (:func:`agent.evidence.segment.reseal_copy`), durably, and index it to be uploaded first.
        FileNotFoundError when the ring let it go meanwhile."""
        seq = self.next_seq
        part = self.dir / f"{uuid.uuid4()}{PARTIAL_SUFFIX}"

        def write() -> SignedManifest:
            with src.open("rb") as fh_in, part.open("xb") as fh_out:
                os.fchmod(fh_out.fileno(), 0o600)
                signed = reseal_copy(fh_in, fh_out, ring, signer=self._signer, seq=seq, prev=self.head_hash,
                                     background=background)
                fh_out.flush()
                os.fsync(fh_out.fileno())
            return signed

        try:
            signed = retry_when_full(write, self._make_room)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        final = self.dir / segment_filename(seq)
        publish_new(part, final)
        self.head_seq, self.head_hash = seq, signed.hash
        t, c = signed.manifest["time"], signed.manifest["ciphertext"]
        self._index(seq, functools.partial(
            self._store.record_segment_entry,
            seq,
            device_id=self.device_id,
            boot_id=str(signed.manifest["boot_id"]),
            path=f"segments/{final.name}",
            recording_id=None,
            mono_start_ns=t["mono_start_ns"],
            mono_end_ns=t["mono_end_ns"],
            utc_start_ns=t["utc_start_ns"],
            utc_end_ns=t["utc_end_ns"],
            manifest_sha256=signed.hash,
            ciphertext_sha256=c["sha256"],
            size_bytes=final.stat().st_size,
            chunks=c["chunks"],
            flags=signed.manifest["flags"],
            marks=0,
            priority=1,  # asked for by headquarters: before the backlog
        ))
        log.info("chain: seq %d copied from background ring entry %d", seq, ring.seq)
        return signed

    def salvage_now(self, path: Path) -> int | None:
        """Seal what reached the disk of a segment whose writing failed; None when nothing can be.

        A file that already carries a manifest (its final fsync failed) is left for recovery at
        the next start, which checks it against the chain; so is one without a chunk.
        """
        with path.open("rb") as fh:
            found = scan(fh)
        salvage = plan_salvage(found, path.stat().st_size)
        if salvage is None or found.header is None or salvage.chunks == 0:
            return None
        return self.seal_salvaged(path, salvage, found.header).seq
