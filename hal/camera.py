"""The visible-light camera protocol and its frame type."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from hal.common import Device


@dataclass(frozen=True, slots=True)
class VideoFormat:
    """What a camera delivers. ``pixel_format`` names FFmpeg's pixel format (``yuv420p``, ``rgb24``)."""

    width: int
    height: int
    fps_num: int
    fps_den: int = 1
    pixel_format: str = "yuv420p"

    @property
    def fps(self) -> float:
        return self.fps_num / self.fps_den


@dataclass(frozen=True, slots=True)
class VideoFrame:
    """One frame as the sensor gave it.

    ``index`` counts frames since ``open`` with no gaps unless the driver dropped some
    (then ``dropped_before`` says how many). ``mono_ns`` is the host monotonic time of
    capture, ``sensor_ns`` the sensor's own timestamp. ``data`` is the image in
    ``pixel_format``: for yuv420p a flat (height * 3 / 2, width) plane stack.
    """

    camera: str
    index: int
    mono_ns: int
    sensor_ns: int
    width: int
    height: int
    pixel_format: str
    data: npt.NDArray[np.uint8] = field(repr=False)
    dropped_before: int = 0


class Camera(Device, Protocol):
    """A visible camera. ``read(timeout_s)`` blocks up to ``timeout_s`` seconds for the next
    frame and returns None on timeout; 0 polls. Raises SensorError when the device fails.
    ``capabilities`` declares extras such as ``"h264-hw"`` instead of raising later."""

    @property
    def format(self) -> VideoFormat: ...

    @property
    def capabilities(self) -> frozenset[str]: ...

    def read(self, timeout_s: float) -> VideoFrame | None: ...


# The capability of a camera whose driver has an H.264 encoder of its own (H264Camera).
H264_ENCODER = "h264-encoder"


@dataclass(frozen=True, slots=True)
class H264Settings:
    """What a camera's own H.264 encoder is asked for: bitrate and an IDR every ``gop_frames``."""

    bitrate_bps: int
    gop_frames: int


@dataclass(frozen=True, slots=True)
class H264Probe:
    """A camera encoder's answer to "does it work here, keyframes on request included?".

    ``header`` is the SPS/PPS (Annex B) its stream carries at these settings, which the track is
    declared with; None means unusable, and ``reason`` says why (or what was found)."""

    header: bytes | None = field(repr=False)
    reason: str


@dataclass(frozen=True, slots=True)
class EncodedVideo:
    """One H.264 access unit (Annex B) made by the camera's own encoder, never a frame in Python.

    ``mono_ns`` is the host monotonic time of capture, derived from ``sensor_ns``, the sensor's
    timestamp; ``index`` counts frames since ``open``; ``dropped_before`` counts frames lost
    before this one (a unit the consumer was too late for, and every unit after it up to the next
    keyframe, which cannot be decoded without it)."""

    camera: str
    index: int
    mono_ns: int
    sensor_ns: int
    keyframe: bool
    data: bytes = field(repr=False)
    dropped_before: int = 0


class H264Camera(Camera, Protocol):
    """A camera that encodes H.264 itself (capability ``H264_ENCODER``): picamera2's encoder on a
    Raspberry Pi hands out encoded units with the sensor's timestamps, so no frame is copied
    through Python. ``probe_h264`` opens the camera, encodes a moment at ``settings`` with one
    keyframe requested, and closes it again. After ``encode_with`` (before ``open``) ``read``
    returns ``EncodedVideo`` instead of ``VideoFrame``; the driver calls ``keyframe_due`` once a
    frame, from the reading thread, and forces a keyframe when it answers True."""

    def probe_h264(self, settings: H264Settings) -> H264Probe: ...

    def encode_with(self, settings: H264Settings, keyframe_due: Callable[[], bool]) -> None: ...
