"""The values that flow from the encoders to the muxer: track descriptions and encoded packets."""

from __future__ import annotations

from dataclasses import dataclass, field

TRACK_KINDS = ("video", "audio", "thermal")


class MediaError(Exception):
    """Encoding or muxing failed; the message says what was being done and the cause is chained."""


@dataclass(frozen=True, slots=True)
class TrackSpec:
    """What a muxer needs to declare one track without re-encoding anything.

    ``codec`` is FFmpeg's name for the bitstream (``h264``, ``opus``, ``aac``, ``ffv1``), not the
    encoder library. ``rate_num / rate_den`` is the nominal frame rate for video and thermal, and
    ``sample_rate_hz / 1`` for audio. ``extradata`` is the codec's global header (SPS/PPS,
    OpusHead, AudioSpecificConfig, FFV1 configuration record), None when the codec has none.
    """

    name: str
    kind: str
    codec: str
    width: int | None
    height: int | None
    pixel_format: str | None
    sample_rate_hz: int | None
    channels: int | None
    rate_num: int
    rate_den: int
    extradata: bytes | None = field(repr=False)
    bitrate_bps: int | None

    def __post_init__(self) -> None:
        if self.kind not in TRACK_KINDS:
            raise ValueError(f"track {self.name!r}: kind {self.kind!r} is not one of {TRACK_KINDS}")
        if self.rate_num <= 0 or self.rate_den <= 0:
            raise ValueError(f"track {self.name!r}: rate {self.rate_num}/{self.rate_den} must be positive")


@dataclass(frozen=True, slots=True)
class EncodedPacket:
    """One encoded access unit on the host monotonic timeline.

    ``pts_ns`` and ``dts_ns`` are host monotonic nanoseconds (video: the frame's ``mono_ns``;
    audio: the chunk's ``mono_ns`` plus the offset of the packet's first sample), so every track
    shares one clock. ``frames`` is how many source frames (video, thermal: 1) or audio samples
    per channel the packet carries. ``keyframe`` means a decoder can start here.
    """

    track: str
    pts_ns: int
    dts_ns: int
    duration_ns: int
    keyframe: bool
    data: bytes = field(repr=False)
    frames: int

    @property
    def end_ns(self) -> int:
        """Monotonic time just after the last frame or sample of this packet."""
        return self.pts_ns + self.duration_ns
