"""A segment being recorded, what its manifest will say, and the seams the pipeline writes through."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from agent.chainlog import OpenSegment
from agent.evidence.segment import SealResult
from agent.media.muxer import SegmentMuxer
from agent.media.packets import EncodedPacket, TrackSpec
from hal.gnss import GnssFix


class Muxer(Protocol):
    """What the pipeline needs of a muxer (:class:`SegmentMuxer`; a fake in tests)."""

    def write(self, packet: EncodedPacket) -> None: ...

    def close(self) -> None: ...


# (open segment, tracks, start_ns, title, metadata) -> a muxer writing into the segment
MuxerFactory = Callable[[OpenSegment, list[TrackSpec], int, str, dict[str, str]], Muxer]


def matroska_muxer(
    opened: OpenSegment, tracks: list[TrackSpec], start_ns: int, title: str, metadata: dict[str, str]
) -> Muxer:
    return SegmentMuxer(opened, tracks, start_ns, title=title, metadata=metadata)


class SegmentChain(Protocol):
    """What the pipeline needs of the chain log (:class:`agent.chainlog.ChainLog`)."""

    device_id: str

    def open_segment(self, mono_start_ns: int, utc_start_ns: int, recording_id: str | None = None) -> OpenSegment: ...

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
    ) -> SealResult: ...

    def salvage_now(self, path: Path) -> int | None: ...

    def event(
        self,
        name: str,
        detail: dict[str, Any] | None = None,
        *,
        flags: list[str] | None = None,
        recording_id: str | None = None,
        sealed_meta: dict[str, Any] | None = None,
    ) -> Any: ...


@dataclass
class Segment:
    """A segment being recorded: the muxer, the sealing writer, and what its manifest will say."""

    open: OpenSegment
    muxer: Muxer
    recording_id: str
    trigger: str
    start_ns: int
    trigger_ns: int = 0  # when the recording was triggered: footage before it is pre-event
    end_ns: int = 0
    frames: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    marks: list[dict[str, Any]] = field(default_factory=list)
    notes: list[dict[str, Any]] = field(default_factory=list)
    fixes: list[dict[str, Any]] = field(default_factory=list)
    flags: set[str] = field(default_factory=set)
    switched: set[str] = field(default_factory=set)  # tracks that moved here from the previous segment
    started: set[str] = field(default_factory=set)  # video tracks that have had their first keyframe
    durable_frames: dict[str, int] = field(default_factory=dict)  # frames written before the last checkpoint

    def pre_event_ns(self, end_ns: int) -> int:
        return max(0, min(end_ns, self.trigger_ns) - self.start_ns)


def track_manifest(t: TrackSpec, seg: Segment) -> dict[str, Any]:
    params: dict[str, Any] = {"rate": f"{t.rate_num}/{t.rate_den}"}
    if t.width is not None:
        params.update(width=t.width, height=t.height, pixel_format=t.pixel_format)
    if t.sample_rate_hz is not None:
        params.update(sample_rate_hz=t.sample_rate_hz, channels=t.channels)
    if t.bitrate_bps is not None:
        params["bitrate_bps"] = t.bitrate_bps
    return {
        "name": t.name,
        "kind": t.kind,
        "codec": t.codec,
        "params": params,
        "frames": seg.frames.get(t.name, 0),
        "dropped": seg.dropped.get(t.name, 0),
    }


def manifest_fields(seg: Segment, tracks: list[TrackSpec], end_ns: int) -> dict[str, Any]:
    return {
        "recording_id": seg.recording_id,
        "trigger": seg.trigger,
        "container": "matroska",
        "tracks": [track_manifest(t, seg) for t in tracks],
        "marks": seg.marks,
        "pre_event_ns": seg.pre_event_ns(end_ns),
    }


def fix_record(fix: GnssFix) -> dict[str, Any]:
    """A GNSS fix as a segment's sealed metadata keeps it (integers: canonical JSON has no floats)."""
    return {
        "mono_ns": fix.mono_ns,
        "utc_ns": fix.utc_ns,
        "lat_e7": None if fix.lat_deg is None else round(fix.lat_deg * 1e7),
        "lon_e7": None if fix.lon_deg is None else round(fix.lon_deg * 1e7),
        "alt_mm": None if fix.alt_m is None else round(fix.alt_m * 1000),
        "h_acc_mm": None if fix.h_acc_m is None else round(fix.h_acc_m * 1000),
        "mode": int(fix.mode),
    }
