"""The background ring on disk: ``<data-dir>/background/<seq>.bcs``, segments of the background
recording sealed like all evidence (encrypted to headquarters, signed, checkpointed) and linked in
their own hash chain (manifests carry ``"chain": "background"``), indexed in the store's
``background_ring`` table, removed by age or under storage pressure.

Its own chain, not flagged entries in the unit's one chain: a ring entry is let go without ever
being uploaded, which in the one chain would be a hole headquarters waits for for ever and that
retention (acknowledged entries only) could never free. A requested range is copied into the
one chain as new entries (``agent.evidence.segment.reseal_copy``), which are then uploaded and
acknowledged like any other.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from pathlib import Path
from typing import Any

from agent.evidence.format import GENESIS_PREV, PARTIAL_SUFFIX, segment_filename
from agent.evidence.keys import HqPublicKey
from agent.evidence.manifest import SignedManifest, parse_manifest_record
from agent.evidence.segment import SegmentWriter, scan
from agent.fsutil import fsync_dir, publish_new
from agent.segfile import OpenSegment, OsSegmentFile
from agent.store import RingEntry, Store
from hal.clock import Clock
from hal.keystore import KeyStore

log = logging.getLogger(__name__)

RING_DIR = "background"
CHAIN = "background"


class RingError(Exception):
    """A ring file that cannot be written, read or removed: the message says which and why."""


class BackgroundRing:
    """Appends to and trims the background chain. Thread contract: the background recorder's
    thread opens, seals and trims; ``entry_manifest``/``path_of`` may be called from another
    thread (the recorder exporting a range): sealed files are never rewritten, and a file trimmed
    meanwhile is reported as gone (FileNotFoundError), never half-read as something else."""

    def __init__(self, data_dir: Path, *, store: Store, signer: KeyStore, hq_public: HqPublicKey,
                 device_id: str, boot_id: str, firmware: str, config_sha256: str, clock: Clock,
                 chunk_bytes: int) -> None:
        self.data_dir = data_dir
        self.dir = data_dir / RING_DIR
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._store = store
        self._signer = signer
        self._hq_public = hq_public
        self._device_id = device_id
        self._boot_id = boot_id
        self._firmware = firmware
        self._config_sha256 = config_sha256
        self._clock = clock
        self._chunk_bytes = chunk_bytes
        head = store.ring_head()
        self.head_seq, self.head_hash = head if head is not None else (-1, GENESIS_PREV)
        self._drop_partials()

    def _drop_partials(self) -> None:
        """A ring segment cut by a power loss is not salvaged: it was never evidence and holds at
        most one ``segment_s`` of background footage. Removed, and logged."""
        for part in sorted(self.dir.glob(f"*{PARTIAL_SUFFIX}")):
            log.warning("background: removing %s, cut off by the last stop", part.name)
            with contextlib.suppress(FileNotFoundError):
                part.unlink()

    def open_segment(self, mono_start_ns: int, utc_start_ns: int) -> OpenSegment:
        segment_id = str(uuid.uuid4())
        path = self.dir / f"{segment_id}{PARTIAL_SUFFIX}"
        fh = OsSegmentFile(path)
        fsync_dir(self.dir)
        writer = SegmentWriter(
            fh, signer=self._signer, hq_public=self._hq_public, device_id=self._device_id,
            boot_id=self._boot_id, segment_id=segment_id, chunk_bytes=self._chunk_bytes, sync=fh.sync,
            started={"mono_ns": mono_start_ns, "utc_ns": utc_start_ns, "recording_id": None},
        )
        return OpenSegment(segment_id, path, fh, writer, mono_start_ns, utc_start_ns, mono_start_ns)

    def seal(self, seg: OpenSegment, *, mono_end_ns: int, utc_end_ns: int, tracks: list[dict[str, Any]],
             flags: list[str]) -> RingEntry:
        """Seal ``seg`` as the ring's next entry, publish it under its seq and index it."""
        seq = self.head_seq + 1
        q = self._clock.quality()
        time = {"mono_start_ns": seg.mono_start_ns, "mono_end_ns": mono_end_ns,
                "signed_mono_ns": self._clock.monotonic_ns(), "utc_start_ns": seg.utc_start_ns,
                "utc_end_ns": utc_end_ns, "source": q.source.value, "synced": q.synced,
                "uncertainty_ns": q.uncertainty_ns}
        fields = {"chain": CHAIN, "recording_id": None, "trigger": "background", "container": "matroska",
                  "tracks": tracks, "marks": [], "pre_event_ns": 0}
        result = seg.writer.finish(seq=seq, prev=self.head_hash, fields=fields, firmware=self._firmware,
                                   config_sha256=self._config_sha256, time=time, flags=flags)
        seg.fh.close()
        final = self.dir / segment_filename(seq)
        publish_new(seg.path, final)
        self.head_seq, self.head_hash = seq, result.signed.hash
        entry = RingEntry(seq, f"{RING_DIR}/{final.name}", self._boot_id, seg.mono_start_ns, mono_end_ns,
                          seg.utc_start_ns, utc_end_ns, result.signed.hash, result.bytes_total)
        self._store.add_ring_entry(entry)
        return entry

    def discard(self, seg: OpenSegment) -> None:
        """Drop a segment that could not be written (the ring is not evidence until copied)."""
        with contextlib.suppress(OSError):
            seg.fh.close()
        with contextlib.suppress(FileNotFoundError):
            seg.path.unlink()

    def remove(self, entries: list[RingEntry], why: str) -> int:
        """Delete these entries' files (rows kept, marked); the bytes freed."""
        freed = 0
        for e in entries:
            path = self.data_dir / e.path
            try:
                path.unlink()
                freed += e.bytes
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise RingError(f"removing {e.path}: {exc.strerror}") from exc
            self._store.ring_deleted(e.seq)
        if entries:
            log.info("background: %d ring entr%s removed (%s), %d bytes", len(entries),
                     "y" if len(entries) == 1 else "ies", why, freed)
        return freed

    def stats(self) -> tuple[int, int, int | None, int | None]:
        """(entries, bytes, UTC start of the oldest, UTC end of the newest) on disk (any thread)."""
        return self._store.ring_stats()

    def entries(self, from_utc_ns: int = 0, to_utc_ns: int = 2**63 - 1) -> list[RingEntry]:
        """Entries still on disk that overlap [from, to], oldest first (any thread)."""
        return self._store.ring_entries(from_utc_ns, to_utc_ns)

    def manifest_of(self, entry: RingEntry) -> SignedManifest:
        """The signed manifest of a ring entry's file (FileNotFoundError once it was trimmed)."""
        with (self.data_dir / entry.path).open("rb") as fh:
            found = scan(fh)
        if found.manifest_record is None:
            raise RingError(f"{entry.path} has no manifest")
        signed = parse_manifest_record(found.manifest_record)
        if signed.hash != entry.manifest_sha256 or signed.manifest.get("chain") != CHAIN:
            raise RingError(f"{entry.path} is not the ring entry {entry.seq} the index names")
        return signed
