"""Melexis MLX90640 32x24 thermal array over I2C (smbus2): EEPROM once, then both subpages per frame."""

from __future__ import annotations

import logging
import threading

import numpy as np
import numpy.typing as npt

from drivers import mlx90640_calib as calib
from drivers.i2c_port import I2cError, I2cPort, SmbusPort, probe_bus
from drivers.pacing import check_float, check_int, check_name
from drivers.registry import register
from hal.clock import Clock
from hal.common import Availability, SensorError
from hal.thermal import ThermalFrame

log = logging.getLogger(__name__)

ADDRESS = 0x33
REG_STATUS = 0x8000
REG_CONTROL = 0x800D
EEPROM_START = 0x2400
RAM_START = 0x0400
STATUS_NEW_DATA = 0x0008
REFRESH_CODES = {0.5: 0, 1.0: 1, 2.0: 2, 4.0: 3, 8.0: 4, 16.0: 5, 32.0: 6, 64.0: 7}


def fill_failed(to_c: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Failed pixels (NaN) replaced by the mean of their valid 4-neighbours, as the datasheet suggests."""
    grid = to_c.reshape(calib.ROWS, calib.COLS).copy()
    for r, c in zip(*np.nonzero(np.isnan(grid)), strict=True):
        near = [grid[y, x] for y, x in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1))
                if 0 <= y < calib.ROWS and 0 <= x < calib.COLS and not np.isnan(grid[y, x])]  # fmt: skip
        grid[r, c] = float(np.mean(near)) if near else np.nan
    return grid


def to_centikelvin(grid_c: npt.NDArray[np.float64]) -> npt.NDArray[np.uint16]:
    ck = np.rint((grid_c + calib.KELVIN) * 100)
    out: npt.NDArray[np.uint16] = np.clip(np.nan_to_num(ck, nan=0.0), 0, 0xFFFF).astype(np.uint16)
    return out


@register("thermal", "mlx90640")
class Mlx90640:
    """A Melexis MLX90640 32x24 thermal array on I2C, temperatures as the datasheet computes them.

    Chess mode. A frame is the two subpages; each is computed as it arrives.

    ``read`` is for one consumer thread and polls the status register on the injected clock;
    ``get_status`` is safe from any thread.
    """

    def __init__(
        self,
        *,
        name: str,
        clock: Clock,
        i2c_bus: int = 1,
        address: int = ADDRESS,
        refresh_hz: float = 8.0,
        emissivity: float = 1.0,
        i2c: I2cPort | None = None,
    ) -> None:
        self.name = check_name(name)
        self._clock = clock
        self._bus = check_int("i2c_bus", i2c_bus, 0, 255)
        self._address = check_int("address", address, 0x08, 0x77)
        refresh = check_float("refresh_hz", refresh_hz, 0.5, 64.0)
        if refresh not in REFRESH_CODES:
            raise ValueError(f"refresh_hz: expected one of {sorted(REFRESH_CODES)}, got {refresh_hz!r}")
        self._refresh_hz = refresh
        self._emissivity = check_float("emissivity", emissivity, 0.1, 1.0)
        self._given = i2c
        self._lock = threading.Lock()
        self._port: I2cPort | None = None
        self._cal: calib.Calibration | None = None
        self._control = 0
        self._pending: npt.NDArray[np.float64] | None = None
        self._pending_subpages: set[int] = set()
        self._index = 0
        self._subpages = 0
        self._ta_c: float | None = None
        self._last_error: str | None = None

    @property
    def width(self) -> int:
        return calib.COLS

    @property
    def height(self) -> int:
        return calib.ROWS

    @property
    def rate_hz(self) -> float:
        return self._refresh_hz / 2  # one frame is two subpages

    @classmethod
    def probe(cls) -> Availability:
        why = probe_bus(1)
        return Availability(not why, why)

    def _read_words(self, address: int, count: int) -> npt.NDArray[np.int64]:
        assert self._port is not None
        raw = self._port.write_read(self._address, address.to_bytes(2, "big"), 2 * count)
        return np.frombuffer(raw, dtype=">u2").astype(np.int64)

    def _write_word(self, address: int, value: int) -> None:
        assert self._port is not None
        self._port.write(self._address, address.to_bytes(2, "big") + value.to_bytes(2, "big"))

    def open(self) -> None:
        """Read and check the EEPROM, set chess mode and the refresh rate."""
        with self._lock:
            if self._port is not None:
                return
            try:
                self._port = self._given or SmbusPort(self._bus)
                self._cal = calib.extract(self._read_words(EEPROM_START, calib.EEPROM_WORDS))
                control = int(self._read_words(REG_CONTROL, 1)[0])
                control = (control & ~0x0380) | (REFRESH_CODES[self._refresh_hz] << 7) | 0x1000  # rate, chess
                self._write_word(REG_CONTROL, control)
                self._control = control
            except (I2cError, calib.CalibrationError) as exc:
                self._close_port()
                self._last_error = str(exc)
                raise SensorError(f"{self.name}: {exc}") from exc
            if self._cal.broken_pixels or self._cal.outlier_pixels:
                log.warning("%s: failed pixels %s, outliers %s", self.name,
                            self._cal.broken_pixels, self._cal.outlier_pixels)
            self._pending, self._pending_subpages, self._index = None, set(), 0

    def _close_port(self) -> None:
        port, self._port = self._port, None
        if port is not None and self._given is None:
            port.close()

    def close(self) -> None:
        with self._lock:
            self._close_port()

    def __enter__(self) -> Mlx90640:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, timeout_s: float) -> ThermalFrame | None:
        """The next full frame, polling up to ``timeout_s`` seconds (0 or less: one poll); None on timeout."""
        deadline = self._clock.monotonic_ns() + round(max(timeout_s, 0.0) * 1e9)
        poll_s = min(0.005, 0.25 / self._refresh_hz)
        while True:
            if self._port is None or self._cal is None:
                raise SensorError(f"{self.name}: read while closed")
            try:
                status = int(self._read_words(REG_STATUS, 1)[0])
                if status & STATUS_NEW_DATA:
                    ram = self._read_words(RAM_START, calib.RAM_WORDS)
                    self._write_word(REG_STATUS, status & ~STATUS_NEW_DATA)
                    frame = self._subpage(ram, status & 1)
                    if frame is not None:
                        return frame
                    continue
            except I2cError as exc:
                self._last_error = str(exc)
                raise SensorError(f"{self.name}: {exc}") from exc
            if self._clock.monotonic_ns() >= deadline:
                return None
            self._clock.sleep(poll_s)

    def _subpage(self, ram: npt.NDArray[np.int64], subpage: int) -> ThermalFrame | None:
        assert self._cal is not None
        result = calib.temperatures(self._cal, ram, subpage, self._control, emissivity=self._emissivity)
        self._subpages += 1
        self._ta_c = result.ta_c
        if self._pending is None:
            self._pending = np.full(calib.PIXELS, np.nan)
        measured = ~np.isnan(result.to_c)
        self._pending[measured] = result.to_c[measured]
        self._pending_subpages.add(subpage)
        if self._pending_subpages != {0, 1} or subpage != 1:
            return None
        broken = list(self._cal.broken_pixels)
        values = self._pending.copy()
        values[broken] = np.nan
        self._pending_subpages = set()
        now = self._clock.monotonic_ns()
        frame = ThermalFrame(
            index=self._index, mono_ns=now, sensor_ns=now, width=calib.COLS, height=calib.ROWS,
            data=to_centikelvin(fill_failed(values)), fpa_temp_ck=round((result.ta_c + calib.KELVIN) * 100),
        )  # fmt: skip
        self._index += 1
        return frame

    def get_status(self) -> dict[str, object]:
        cal = self._cal
        return {
            "name": self.name,
            "driver": "mlx90640",
            "open": self._port is not None,
            "refresh_hz": self._refresh_hz,
            "frames": self._index,
            "subpages": self._subpages,
            "ambient_c": round(self._ta_c, 2) if self._ta_c is not None else None,
            "failed_pixels": list(cal.broken_pixels) if cal else [],
            "outlier_pixels": list(cal.outlier_pixels) if cal else [],
            "dropped": 0,
            "last_error": self._last_error,
        }
