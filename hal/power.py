"""The power protocol: battery level, charging, temperature."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from hal.common import Device


@dataclass(frozen=True, slots=True)
class PowerStatus:
    mono_ns: int
    battery_pct: float
    charging: bool
    external_power: bool
    temperature_c: float | None = None
    voltage_v: float | None = None


class Power(Device, Protocol):
    """``read()`` polls the gauge; it does I/O and may raise SensorError."""

    def read(self) -> PowerStatus: ...
