"""The visible-light camera protocol and its frame type."""

from __future__ import annotations

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
