"""Battery state from a Maxim MAX17048/MAX17049 fuel gauge over I2C (smbus2)."""

from __future__ import annotations

import threading

from drivers.battery_common import GaugeReadings
from drivers.i2c_port import I2cError, I2cPort, SmbusPort, probe_bus
from drivers.pacing import check_int, check_name
from drivers.registry import register
from hal.clock import Clock
from hal.common import Availability, SensorError
from hal.power import PowerStatus

ADDRESS = 0x36
REG_VCELL = 0x02  # 78.125 uV per LSB per cell
REG_SOC = 0x04  # 1/256 % per LSB
REG_VERSION = 0x08
REG_CRATE = 0x16  # signed, 0.208 %/h per LSB


def decode(vcell: int, soc: int, crate: int, cells: int = 1) -> tuple[float, float, float]:
    """(voltage V, state of charge %, charge rate %/h) from the raw register words."""
    voltage = vcell * 78.125e-6 * cells
    pct = min(100.0, soc / 256)
    rate = (crate - 0x10000 if crate & 0x8000 else crate) * 0.208
    return round(voltage, 4), round(pct, 2), round(rate, 3)


@register("power", "max17048")
class Max17048:
    """Battery level from a MAX17048 (one cell) or MAX17049 (two cells) fuel gauge on I2C.

    The gauge does not know whether the charger has input power; a positive charge rate
    means charging, and then external power is present. Thread-safe.
    """

    def __init__(
        self, *, name: str, clock: Clock, i2c_bus: int = 1, cells: int = 1, i2c: I2cPort | None = None
    ) -> None:
        self.name = check_name(name)
        self._clock = clock
        self._bus = check_int("i2c_bus", i2c_bus, 0, 255)
        self._cells = check_int("cells", cells, 1, 2)
        self._given = i2c
        self._lock = threading.Lock()
        self._port: I2cPort | None = None
        self._version: int | None = None
        self._gauge = GaugeReadings(self.name, "max17048")

    @classmethod
    def probe(cls) -> Availability:
        why = probe_bus(1)
        return Availability(not why, why)

    def _word(self, reg: int) -> int:
        assert self._port is not None
        return int.from_bytes(self._port.write_read(ADDRESS, bytes([reg]), 2), "big")

    def open(self) -> None:
        with self._lock:
            if self._port is not None:
                return
            try:
                self._port = self._given or SmbusPort(self._bus)
                self._version = self._word(REG_VERSION)
            except I2cError as exc:
                self._port = None
                self._gauge.last_error = str(exc)
                raise SensorError(f"{self.name}: no MAX17048 at 0x36: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            port, self._port = self._port, None
            if port is not None and self._given is None:
                port.close()

    def read(self) -> PowerStatus:
        with self._lock:
            return self._gauge.read(self._port is not None, self._measure, (I2cError,))

    def _measure(self) -> PowerStatus:
        voltage, pct, rate = decode(self._word(REG_VCELL), self._word(REG_SOC), self._word(REG_CRATE), self._cells)
        charging = rate > 0
        return PowerStatus(self._clock.monotonic_ns(), pct, charging, charging, None, voltage)

    def get_status(self) -> dict[str, object]:
        with self._lock:
            return self._gauge.status(self._port is not None, ("battery_pct", "voltage_v", "charging"),
                                      version=f"0x{self._version:04x}" if self._version is not None else None)
