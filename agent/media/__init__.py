"""Media pipeline: continuous encoders producing timestamped packets, and a per-segment Matroska muxer."""

from .audio import AudioEncoder
from .encoders import ThermalEncoder, VideoEncoder
from .muxer import ByteSink, SegmentMuxer
from .packets import EncodedPacket, MediaError, TrackSpec

__all__ = [
    "AudioEncoder",
    "ByteSink",
    "EncodedPacket",
    "MediaError",
    "SegmentMuxer",
    "ThermalEncoder",
    "TrackSpec",
    "VideoEncoder",
]
