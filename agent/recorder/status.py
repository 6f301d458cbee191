"""The recorder's status: one typed snapshot, taken on the recorder thread, read from any other."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent.recorder.mode import Mode
from agent.recorder.pipeline import SegmentPipeline
from hal.clock import Clock
from hal.gnss import GnssFix


@dataclass(frozen=True, slots=True)
class SegmentStatus:
    started_s_ago: float
    marks: int
    bytes: int


@dataclass(frozen=True, slots=True)
class RecorderStatus:
    """What the recorder says of itself; :meth:`as_dict` is the shape the control socket,
    the console and the heartbeat read (unchanged from the dict of round one)."""

    state: str
    recording_id: str | None
    stealth: bool
    muted: bool
    storage_level: str
    segment: SegmentStatus | None
    pre_event_configured_s: float
    pre_event_buffered_packets: int
    pre_event_buffered_s: float
    pre_event_buffered_bytes: int
    chain_head_seq: int
    chain_head: str
    segments_sealed: int
    frames: dict[str, int]
    dropped: dict[str, int]
    lost_to_storage: dict[str, int]
    gnss: GnssFix | None
    time_source: str
    time_synced: bool
    utc_ns: int
    gnss_offset_ns: int | None
    last_error: str | None

    def as_dict(self) -> dict[str, Any]:
        seg, fix = self.segment, self.gnss
        return {
            "state": self.state,
            "recording_id": self.recording_id,
            "stealth": self.stealth,
            "muted": self.muted,
            "storage_level": self.storage_level,
            "segment": None
            if seg is None
            else {"started_s_ago": seg.started_s_ago, "marks": seg.marks, "bytes": seg.bytes},
            "pre_event": {
                "configured_s": self.pre_event_configured_s,
                "buffered_packets": self.pre_event_buffered_packets,
                "buffered_s": self.pre_event_buffered_s,
                "buffered_bytes": self.pre_event_buffered_bytes,
            },
            "chain": {"head_seq": self.chain_head_seq, "head": self.chain_head},
            "segments_sealed": self.segments_sealed,
            "frames": dict(self.frames),
            "dropped": dict(self.dropped),
            "lost_to_storage": dict(self.lost_to_storage),
            "gnss": None
            if fix is None
            else {"mode": int(fix.mode), "lat_deg": fix.lat_deg, "lon_deg": fix.lon_deg, "h_acc_m": fix.h_acc_m},
            "time": {
                "source": self.time_source,
                "synced": self.time_synced,
                "utc_ns": self.utc_ns,
                "gnss_offset_ms": None if self.gnss_offset_ns is None else round(self.gnss_offset_ns / 1e6, 1),
            },
            "last_error": self.last_error,
        }


def snapshot(
    mode: Mode,
    pipeline: SegmentPipeline,
    clock: Clock,
    *,
    frames: dict[str, int],
    dropped: dict[str, int],
    pre_event_configured_s: float,
    pre_event_buffered_packets: int,
    pre_event_buffered_s: float,
    pre_event_buffered_bytes: int,
    head: tuple[int, str],
    gnss: GnssFix | None,
    gnss_offset_ns: int | None,
    last_error: str | None,
) -> RecorderStatus:
    """Taken on the recorder thread (it reads the open segment)."""
    seg = pipeline.current
    quality = clock.quality()
    return RecorderStatus(
        state=mode.state.value,
        recording_id=mode.recording_id,
        stealth=mode.stealth,
        muted=mode.muted,
        storage_level=mode.storage.value,
        segment=None
        if seg is None
        else SegmentStatus(
            round((clock.monotonic_ns() - seg.start_ns) / 1e9, 1), len(seg.marks), seg.open.writer.bytes_written
        ),
        pre_event_configured_s=pre_event_configured_s,
        pre_event_buffered_packets=pre_event_buffered_packets,
        pre_event_buffered_s=pre_event_buffered_s,
        pre_event_buffered_bytes=pre_event_buffered_bytes,
        chain_head_seq=head[0],
        chain_head=head[1],
        segments_sealed=pipeline.sealed,
        frames=dict(frames),
        dropped=dict(dropped),
        lost_to_storage=dict(pipeline.lost),
        gnss=gnss,
        time_source=quality.source.value,
        time_synced=quality.synced,
        utc_ns=clock.utc_ns(),
        gnss_offset_ns=gnss_offset_ns,
        last_error=last_error,
    )
