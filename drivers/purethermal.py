"""FLIR Lepton 3.5 on a PureThermal board, read as a UVC camera in Y16 (radiometric TLinear centikelvin)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import numpy.typing as npt

from drivers import lepton_vospi
from drivers.pacing import check_name
from drivers.registry import register
from drivers.v4l2_capture import Capture, CaptureLifecycle, open_capture, probe_device, resolve_device
from hal.clock import Clock
from hal.common import Availability, SensorError
from hal.thermal import ThermalFrame

log = logging.getLogger(__name__)

WIDTH, HEIGHT = 160, 120
BY_ID = "*PureThermal*-video-index0"


def split_y16(
    raw: npt.NDArray[Any], width: int = WIDTH, height: int = HEIGHT
) -> tuple[npt.NDArray[np.uint16], npt.NDArray[np.uint16] | None]:
    """A Y16 buffer as OpenCV hands it over, as (height, width) pixels and telemetry words (or None).

    With CONVERT_RGB off, OpenCV gives either (h, w) uint16 or the raw little-endian bytes as a
    uint8 row; PureThermal firmware with telemetry on sends two extra rows (160x122) at the bottom.
    """
    if raw.dtype == np.uint16:
        words = np.ascontiguousarray(raw).reshape(-1)
    elif raw.dtype == np.uint8:
        words = np.frombuffer(np.ascontiguousarray(raw).tobytes(), dtype="<u2")
    else:
        raise SensorError(f"Y16 frame of unexpected type {raw.dtype}")
    size = width * height
    if words.size == size:
        return words.reshape(height, width).copy(), None
    if words.size == size + 2 * width:
        return words[:size].reshape(height, width).copy(), words[size : size + 3 * lepton_vospi.PAYLOAD_WORDS].copy()
    raise SensorError(f"Y16 frame of {words.size} pixels, expected {size} or {size + 2 * width}")


@register("thermal", "purethermal")
class PureThermal:
    """A FLIR Lepton 3.5 on a PureThermal board, as a UVC camera in Y16 (radiometric centikelvin).

    Its firmware runs the Lepton's VoSPI and CCI, the host sees UVC.

    The firmware enables radiometry with TLinear at 0.01 K, so Y16 pixels are centikelvin.
    ``read`` is for one consumer thread; ``get_status`` is safe from any thread.
    """

    def __init__(
        self,
        *,
        name: str,
        clock: Clock,
        device: str | int | None = None,
        resolution_ck: int = 1,
        capture: Capture | None = None,
    ) -> None:
        self.name = check_name(name)
        self._clock = clock
        self._device = device
        if resolution_ck not in (1, 10):
            raise ValueError(f"resolution_ck: expected 1 (0.01 K) or 10 (0.1 K), got {resolution_ck!r}")
        self._resolution_ck = resolution_ck
        self._capture = CaptureLifecycle(self.name, capture)
        self._index = 0
        self._frames = 0
        self._bad_frames = 0

    @property
    def width(self) -> int:
        return WIDTH

    @property
    def height(self) -> int:
        return HEIGHT

    @property
    def rate_hz(self) -> float:
        return 8.7

    @classmethod
    def probe(cls) -> Availability:
        return probe_device(BY_ID, "PureThermal board")

    def open(self) -> None:
        def make() -> Capture:
            source = resolve_device(self._device, BY_ID)
            return open_capture(source, fourcc="Y16 ", width=WIDTH, height=HEIGHT, convert_rgb=False)

        if self._capture.open(make, kernel_timestamps=True):
            self._index = 0

    def close(self) -> None:
        self._capture.close()

    def __enter__(self) -> PureThermal:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, timeout_s: float) -> ThermalFrame | None:
        """The next frame. OpenCV's V4L2 read blocks for one frame (about 115 ms at 8.7 Hz)
        whatever ``timeout_s`` says; a failed grab raises SensorError (device unplugged)."""
        raw = self._capture.grab("no frame from the PureThermal (unplugged?)")
        now = self._clock.monotonic_ns()
        try:
            pixels, telemetry = split_y16(raw)
        except SensorError as exc:
            self._bad_frames += 1
            log.warning("%s: %s", self.name, exc)
            return None
        fpa = None
        sensor_ns = now
        if telemetry is not None:
            row = lepton_vospi.parse_telemetry_row_a(telemetry)
            fpa, sensor_ns = row.fpa_temp_ck, row.uptime_ms * 1_000_000
        else:
            sensor_ns = self._capture.sensor_ns(now)
        if self._resolution_ck != 1:
            pixels = np.minimum(pixels.astype(np.uint32) * self._resolution_ck, 0xFFFF).astype(np.uint16)
        frame = ThermalFrame(self._index, now, sensor_ns, WIDTH, HEIGHT, pixels, fpa)
        self._index += 1
        self._frames += 1
        return frame

    def get_status(self) -> dict[str, object]:
        return {
            "name": self.name,
            "driver": "purethermal",
            "open": self._capture.is_open,
            "device": str(self._device) if self._device is not None else BY_ID,
            "frames": self._frames,
            "bad_frames": self._bad_frames,
            "dropped": 0,
            "last_error": self._capture.last_error,
        }
