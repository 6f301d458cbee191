"""A thermal camera that plays a raw file of consecutive little-endian uint16 centikelvin frames."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from drivers.pacing import PacedDevice, check_bool, check_float, check_int, check_path, rate_fraction
from drivers.registry import register
from hal.clock import Clock
from hal.common import SensorError
from hal.thermal import ThermalFrame


@register("thermal", "replay")
class ReplayThermal(PacedDevice):
    """Plays a recorded radiometric stream (``width * height * 2`` bytes a frame, no header).

    Frame i is read at offset ``i * frame size`` (wrapping when looping), so overruns skip by
    seeking. ``read`` is for one consumer thread; ``close`` from another waits for a file read.
    """

    def __init__(
        self,
        *,
        name: str,
        clock: Clock,
        path: str | Path,
        width: int = 160,
        height: int = 120,
        rate_hz: float = 8.7,
        loop: bool = True,
        queue_frames: int = 4,
    ) -> None:
        rate = rate_fraction(check_float("rate_hz", rate_hz, 0.1, 100.0))
        super().__init__(
            name=name, clock=clock, rate_hz=rate, queue_depth=check_int("queue_frames", queue_frames, 1, 64)
        )
        self._path = check_path("path", path)
        self._width = check_int("width", width, 1, 4096)
        self._height = check_int("height", height, 1, 4096)
        self._loop = check_bool("loop", loop)
        self._frame_bytes = self._width * self._height * 2
        self._file_lock = threading.Lock()
        self._file: BinaryIO | None = None
        self._frames = 0

    @property
    def width(self) -> int:
        return self._width

    @property
    def height(self) -> int:
        return self._height

    @property
    def rate_hz(self) -> float:
        return float(self._rate_hz)

    def _open_source(self) -> None:
        try:
            file = self._path.open("rb")
            size = self._path.stat().st_size
        except OSError as exc:
            raise self._fail(f"opening raw thermal file {self._path}: {exc.strerror}") from exc
        if size == 0 or size % self._frame_bytes:
            file.close()
            raise self._fail(
                f"{self._path}: size {size} is not a positive multiple of {self._frame_bytes} bytes"
                f" ({self._width}x{self._height} uint16 frames)"
            )
        self._file, self._frames = file, size // self._frame_bytes
        self._limit = None if self._loop else self._frames

    def _close_source(self) -> None:
        with self._file_lock:
            if self._file is not None:
                self._file.close()
            self._file = None

    def read(self, timeout_s: float) -> ThermalFrame | None:
        """The next frame, waiting up to ``timeout_s`` (0 polls); None on timeout or after the
        end of a file that does not loop."""
        slot = self._next_slot(timeout_s)
        if slot is None:
            return None
        pacer = self._pacer
        t0 = pacer.t0_ns if pacer is not None else slot.due_ns
        return ThermalFrame(
            index=slot.index,
            mono_ns=slot.due_ns,
            sensor_ns=slot.due_ns - t0,
            width=self._width,
            height=self._height,
            data=self._frame(slot.index % self._frames),
            fpa_temp_ck=None,
            dropped_before=slot.dropped_before,
        )

    def _frame(self, number: int) -> npt.NDArray[np.uint16]:
        with self._file_lock:
            if self._file is None:
                raise SensorError(f"{self.name}: closed during read")
            try:
                self._file.seek(number * self._frame_bytes)
                raw = self._file.read(self._frame_bytes)
            except OSError as exc:
                raise self._fail(f"reading {self._path}: {exc.strerror}") from exc
        if len(raw) != self._frame_bytes:
            raise self._fail(f"{self._path}: short read at frame {number} (file truncated?)")
        data = np.frombuffer(raw, dtype="<u2").astype(np.uint16).reshape(self._height, self._width)
        data.flags.writeable = False
        return data

    def _status_extra(self) -> dict[str, object]:
        return {"driver": "replay", "path": str(self._path), "frames_in_file": self._frames}
