"""The segment pipeline: route packets of a recording into segments; rotate, checkpoint, seal, fail.

It owns the open segment and the one closing behind it while the tracks switch over at a
rotation. It knows nothing of the unit's mode: the recorder begins and finishes recordings.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

from agent.fserrors import is_disk_full
from agent.media.packets import EncodedPacket, MediaError, TrackSpec
from agent.recorder.aligner import HOLD_MAX_NS
from agent.recorder.segments import (
    MuxerFactory,
    Segment,
    SegmentChain,
    fix_record,
    manifest_fields,
    matroska_muxer,
)
from hal.clock import Clock
from hal.gnss import FixMode, GnssFix

log = logging.getLogger(__name__)

REOPEN_INTERVAL_NS = 1_000_000_000  # after a storage fault, try a new segment at most once a second


class SegmentPipeline:
    """Segments of one recording at a time. Not thread-safe: the recorder thread owns it.

    When a segment write fails because the disk is full, no new segment is opened until
    :meth:`measured` says the storage maintainer has looked at the disk again (``on_space_fault``
    asks it to, at once).
    """

    def __init__(
        self,
        *,
        chain: SegmentChain,
        clock: Clock,
        tracks: list[TrackSpec],
        anchor: str | None,
        segment_ns: int,
        checkpoint_ns: int,
        segment_flags: Callable[[], Iterable[str]] = tuple,
        on_space_fault: Callable[[], None] = lambda: None,
        on_error: Callable[[str], None] = lambda message: None,
        open_muxer: MuxerFactory = matroska_muxer,
    ) -> None:
        self._chain = chain
        self._clock = clock
        self._tracks = tracks
        self._kind = {t.name: t.kind for t in tracks}
        self._anchor = anchor
        self._segment_ns = segment_ns
        self._checkpoint_ns = checkpoint_ns
        self._segment_flags = segment_flags
        self._on_space_fault = on_space_fault
        self._on_error = on_error
        self._open_muxer = open_muxer
        self.current: Segment | None = None
        self.closing: Segment | None = None
        self.recording_id: str | None = None
        self._trigger = ""
        self._trigger_ns = 0
        self._mark_seq = 0
        self._open_failed_ns: int | None = None
        self._without_since_ns: int | None = None  # recording with no segment open since then
        self.space_fault = False  # a write found the disk full; cleared by :meth:`measured`
        self.lost: dict[str, int] = dict.fromkeys(self._kind, 0)
        self.sealed = 0

    # -- a recording -----------------------------------------------------------------------------

    def begin(self, recording_id: str, trigger: str, start_ns: int, trigger_ns: int) -> Segment | None:
        """Start a recording whose first segment begins at ``start_ns``; None if none could open."""
        self.recording_id, self._trigger, self._trigger_ns = recording_id, trigger, trigger_ns
        self._open_failed_ns = None
        self._mark_seq = 0
        self._without_since_ns = self._clock.monotonic_ns()
        self.current = self._try_open(start_ns, trigger)
        return self.current

    def mark(self, by: str, note: str | None) -> int | None:
        """Mark the current segment now; returns the mark's number, or None with no segment open."""
        seg = self.current
        if seg is None:
            return None
        self._mark_seq += 1
        seg.marks.append(
            {"id": self._mark_seq, "mono_ns": self._clock.monotonic_ns(), "utc_ns": self._clock.utc_ns(), "by": by}
        )
        if note:
            seg.notes.append({"id": self._mark_seq, "note": note})
        return self._mark_seq

    def finish(self) -> str:
        """Seal what is open (held packets must have been routed first); returns the recording id."""
        if self.closing is not None:
            closing, self.closing = self.closing, None
            self._seal(closing, end_ns=self.current.start_ns if self.current is not None else None)
        if self.current is not None:
            current, self.current = self.current, None
            self._seal(current)
        rec, self.recording_id = self.recording_id or "", None
        self._without_since_ns = None
        return rec

    def measured(self) -> None:
        """The storage maintainer has measured the disk: its level says what may be written."""
        self.space_fault = False

    def without_segment_ns(self, now_ns: int) -> int:
        """How long this recording has had no segment open (0 when one is, or when not recording)."""
        return 0 if self._without_since_ns is None else now_ns - self._without_since_ns

    def segments(self) -> tuple[Segment, ...]:
        return tuple(s for s in (self.closing, self.current) if s is not None)

    # -- packets ---------------------------------------------------------------------------------

    def route(self, p: EncodedPacket) -> None:
        seg = self.current
        if seg is None:
            seg = self._reopen(p)
            if seg is None:
                self.count_lost(p)
                return
        due = p.track == self._anchor and p.keyframe and p.pts_ns - seg.start_ns >= self._segment_ns
        if due and self.closing is None and self._rotate(p.pts_ns):
            seg = self.current
            assert seg is not None
        closing = self.closing
        if closing is not None and p.track not in seg.switched:
            needs_key = self._kind.get(p.track) == "video"
            if p.pts_ns >= seg.start_ns and (p.keyframe or not needs_key):
                seg.switched.add(p.track)
            else:
                self._write(closing, p)
                return
        self._write(seg, p)
        if closing is not None and self.closing is closing and seg.switched >= set(self._kind):
            self.closing = None
            self._seal(closing, end_ns=seg.start_ns)

    def add_fix(self, fix: GnssFix) -> None:
        """A position while recording goes into the current segment's sealed metadata."""
        if self.current is not None and fix.mode >= FixMode.FIX_2D and fix.lat_deg is not None:
            self.current.fixes.append(fix_record(fix))

    def count_lost(self, p: EncodedPacket) -> None:
        """A packet recorded while no segment could take it (storage failing): counted, never silent."""
        self.lost[p.track] = self.lost.get(p.track, 0) + p.frames

    def _write(self, seg: Segment, p: EncodedPacket) -> None:
        if p.pts_ns < seg.start_ns:
            return  # before this recording's first keyframe: not decodable, never part of it
        if p.track not in seg.started:
            if self._kind.get(p.track) == "video" and not p.keyframe:
                return  # a video track begins at a keyframe (asked for when recording starts)
            seg.started.add(p.track)
        try:
            seg.muxer.write(p)
        except (MediaError, OSError) as exc:
            self._failed(seg, exc)
            self.count_lost(p)
            return
        seg.frames[p.track] = seg.frames.get(p.track, 0) + p.frames
        seg.end_ns = max(seg.end_ns, p.end_ns)

    # -- opening -----------------------------------------------------------------------------------

    def _rotate(self, boundary_ns: int) -> bool:
        """Start the next segment at this anchor keyframe; if it cannot be opened, keep the current one."""
        old = self.current
        assert old is not None
        new = self._try_open(boundary_ns, old.trigger)
        if new is None:
            return False
        new.switched.add(self._anchor or "")
        # a track with nothing in the old segment (audio kept out of the pre-event buffer) has
        # nothing to finish there: it starts in the new one
        new.switched.update(set(self._kind) - set(old.frames))
        self.closing, self.current = old, new
        return True

    def _reopen(self, p: EncodedPacket) -> Segment | None:
        """While recording without a segment (after a storage fault), start one at an anchor keyframe."""
        if (p.track != self._anchor and self._anchor is not None) or not p.keyframe:
            return None
        self.current = self._try_open(p.pts_ns, "continued")
        if self.current is not None:
            log.warning("recording continues in a new segment after a storage fault")
        return self.current

    def _try_open(self, start_ns: int, trigger: str) -> Segment | None:
        if self.space_fault:
            return None  # the disk was full: wait for the maintainer's measurement
        now = self._clock.monotonic_ns()
        if self._open_failed_ns is not None and now - self._open_failed_ns < REOPEN_INTERVAL_NS:
            return None
        try:
            seg = self._open(start_ns, trigger)
        except (MediaError, OSError) as exc:
            self._open_failed_ns = now
            self._error(f"cannot open a segment: {exc}", "recording, but %s; retrying at the next keyframe")
            if is_disk_full(exc):
                self._disk_full_seen()
            return None
        self._open_failed_ns = None
        self._without_since_ns = None
        seg.flags.update(self._segment_flags())
        return seg

    def _open(self, start_ns: int, trigger: str) -> Segment:
        rec = self.recording_id
        assert rec is not None
        utc = self._clock.utc_ns() - (self._clock.monotonic_ns() - start_ns)
        opened = self._chain.open_segment(start_ns, utc, rec)
        device = self._chain.device_id
        try:
            muxer = self._open_muxer(
                opened, self._tracks, start_ns, f"{device} recording {rec}", {"device_id": device, "recording_id": rec}
            )
        except MediaError:
            opened.fh.close()
            raise
        seg = Segment(opened, muxer, rec, trigger, start_ns, trigger_ns=self._trigger_ns)
        if not self._clock.quality().synced:
            seg.flags.add("clock-unsynced")
        return seg

    # -- time passing ----------------------------------------------------------------------------

    def housekeeping(self, now: int) -> None:
        """Stop waiting for a stalled track at a rotation; checkpoint what is due."""
        if self.closing is not None and self.current is not None and now - self.current.start_ns > 2 * HOLD_MAX_NS:
            # a track that never reached its keyframe after the boundary (sensor stalled): stop waiting
            log.warning("sealing previous segment without tracks %s", set(self._kind) - self.current.switched)
            closing, self.closing = self.closing, None
            self._seal(closing, end_ns=self.current.start_ns)
        for seg in self.segments():
            if now - seg.open.last_checkpoint_ns >= self._checkpoint_ns:
                try:
                    seg.open.writer.checkpoint(now)
                except (MediaError, OSError) as exc:
                    self._failed(seg, exc)
                    continue
                seg.open.last_checkpoint_ns = now
                seg.durable_frames = dict(seg.frames)

    # -- ending a segment ------------------------------------------------------------------------

    def _seal(self, seg: Segment, end_ns: int | None = None) -> None:
        try:
            self._seal_or_raise(seg, end_ns)
        except (MediaError, OSError) as exc:
            self._failed(seg, exc)

    def _seal_or_raise(self, seg: Segment, end_ns: int | None) -> None:
        seg.muxer.close()
        end = end_ns if end_ns is not None else max(seg.end_ns, seg.start_ns)
        utc_end = self._clock.utc_ns() - (self._clock.monotonic_ns() - end)
        fields = manifest_fields(seg, self._tracks, end)
        if fields["pre_event_ns"]:
            seg.flags.add("pre-event")
        sealed = {"gnss": seg.fixes, "notes": seg.notes} if (seg.fixes or seg.notes) else None
        result = self._chain.seal(
            seg.open,
            mono_end_ns=end,
            utc_end_ns=utc_end,
            fields=fields,
            flags=sorted(seg.flags),
            sealed_meta=sealed,
            priority=1 if seg.marks or seg.flags - {"clock-unsynced"} else 0,
        )
        self.sealed += 1
        log.info(
            "sealed seq %d: %.1f s, %s, %d bytes%s",
            result.signed.seq,
            (end - seg.start_ns) / 1e9,
            ", ".join(f"{k} {v}" for k, v in sorted(seg.frames.items())),
            result.bytes_total,
            f", {len(seg.marks)} mark(s)" if seg.marks else "",
        )

    def _failed(self, seg: Segment, exc: BaseException) -> None:
        """Writing a segment failed (disk full, I/O error): keep what is durable, carry on recording.

        The segment is never marked sealed on the strength of a failed write or fsync. What reached
        the disk is salvaged now, as recovery would after a power cut; if even that fails, the
        partial file stays for recovery at the next start. A signed event explains the gap.
        """
        full = is_disk_full(exc)
        self._error(f"writing segment {seg.open.segment_id}: {exc}", "storage fault: %s")
        if full:
            self._disk_full_seen()
        if seg is self.current:
            self.current = None
            if self.recording_id is not None:
                self._without_since_ns = self._clock.monotonic_ns()
        if seg is self.closing:
            self.closing = None
        for track, n in seg.frames.items():
            # what was written after the last checkpoint may not have reached the disk: count it lost
            self.lost[track] = self.lost.get(track, 0) + n - seg.durable_frames.get(track, 0)
        with contextlib.suppress(Exception):
            seg.muxer.close()
        with contextlib.suppress(Exception):
            seg.open.fh.close()
        salvaged: int | None = None
        try:
            salvaged = self._chain.salvage_now(seg.open.path)
        except Exception as salvage_exc:
            log.error("could not salvage %s now (%s): left for recovery at the next start", seg.open.path.name,
                      salvage_exc)
        detail: dict[str, Any] = {"error": str(exc)[:200], "salvaged_seq": salvaged}
        try:
            self._chain.event("storage-full" if full else "storage-error", detail, recording_id=seg.recording_id)
        except Exception as event_exc:
            log.error("could not record the storage fault in the chain: %s", event_exc)

    def _disk_full_seen(self) -> None:
        """Open no segment until the maintainer has measured the disk (and says how full it is)."""
        if self.space_fault:
            return
        self.space_fault = True
        try:
            self._on_space_fault()
        except Exception:
            log.exception("recorder: reporting the full disk to the storage maintainer")

    def _error(self, message: str, log_format: str) -> None:
        log.error(log_format, message)
        self._on_error(message)
