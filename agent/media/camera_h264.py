"""The H.264 track of a camera that encodes itself (picamera2): its units become EncodedPackets.

The recorder cannot tell this track from one of :class:`~agent.media.encoders.VideoEncoder`: the
same ``EncodedPacket`` on the host monotonic timeline, the same ``TrackSpec`` (its ``extradata``
the SPS/PPS the probe found in the camera's stream), ``request_keyframe`` before a recording
starts. Nothing is encoded here and no frame passes through: the camera hands over encoded units.
"""

from __future__ import annotations

import threading
from fractions import Fraction

from hal.camera import EncodedVideo, H264Settings, VideoFormat

from .codec import NS_PER_S
from .packets import EncodedPacket, MediaError, TrackSpec

ENCODER_NAME = "picamera2"


class KeyframeLatch:
    """A keyframe wish from the recorder's side to the camera's reading thread, which asks
    ``due()`` once a frame. Thread-safe; wishes made before the next ``due()`` are one wish. Every
    device made for the camera (a replacement after a hang included) shares the camera's latch."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wanted = False
        self.requested = 0

    def request(self) -> None:
        with self._lock:
            self._wanted = True
            self.requested += 1

    def due(self) -> bool:
        with self._lock:
            wanted, self._wanted = self._wanted, False
            return wanted


class CameraH264Track:
    """Turns a camera's ``EncodedVideo`` units into ``EncodedPacket``s for one track.

    One thread feeds it (the camera's sensor thread); ``request_keyframe`` may come from any.
    A unit whose ``mono_ns`` does not increase is a MediaError, as with a software encoder.
    """

    def __init__(self, track: str, fmt: VideoFormat, header: bytes, settings: H264Settings,
                 latch: KeyframeLatch) -> None:
        if not header:
            raise ValueError(f"track {track!r}: a camera's H.264 track needs its SPS/PPS")
        rate = Fraction(fmt.fps_num, fmt.fps_den)
        self._track = track
        self._latch = latch
        self._period_ns = round(NS_PER_S / rate)
        self._spec = TrackSpec(name=track, kind="video", codec="h264", width=fmt.width, height=fmt.height,
                               pixel_format=fmt.pixel_format, sample_rate_hz=None, channels=None,
                               rate_num=rate.numerator, rate_den=rate.denominator, extradata=header,
                               bitrate_bps=settings.bitrate_bps)
        self._last_mono_ns: int | None = None
        self._open = True
        self._packets = 0
        self._keyframes = 0
        self._bytes = 0

    @property
    def spec(self) -> TrackSpec:
        return self._spec

    @property
    def track(self) -> str:
        return self._track

    def request_keyframe(self) -> None:
        """The camera's next frame is encoded as an IDR (asked on its reading thread)."""
        self._latch.request()

    def encode(self, unit: EncodedVideo) -> list[EncodedPacket]:
        """The packet of one unit; the name keeps the sensor threads' one interface."""
        if not isinstance(unit, EncodedVideo):
            raise MediaError(f"track {self._track!r}: expected the camera's encoded units, got "
                             f"{type(unit).__name__}")
        if self._last_mono_ns is not None and unit.mono_ns <= self._last_mono_ns:
            raise MediaError(f"track {self._track!r}: unit {unit.index} mono_ns {unit.mono_ns} does not follow "
                             f"{self._last_mono_ns}")
        self._last_mono_ns = unit.mono_ns
        self._packets += 1
        self._keyframes += unit.keyframe
        self._bytes += len(unit.data)
        return [EncodedPacket(self._track, unit.mono_ns, unit.mono_ns, self._period_ns, unit.keyframe, unit.data, 1)]

    def flush(self) -> list[EncodedPacket]:
        """Nothing is held here: the camera's encoder drains when the camera closes."""
        return []

    def close(self) -> None:
        self._open = False

    def get_status(self) -> dict[str, object]:
        return {"track": self._track, "codec": "h264", "encoder": ENCODER_NAME, "open": self._open,
                "inputs": self._packets, "packets_out": self._packets, "keyframes_out": self._keyframes,
                "bytes_out": self._bytes, "encode_s": 0.0, "keyframes_requested": self._latch.requested}
