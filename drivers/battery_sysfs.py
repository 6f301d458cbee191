"""Battery state from the kernel's power_supply class (/sys/class/power_supply)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from drivers.battery_common import GaugeReadings
from drivers.pacing import check_name
from drivers.registry import register
from hal.clock import Clock
from hal.common import Availability, SensorError
from hal.power import PowerStatus

ROOT = Path("/sys/class/power_supply")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _number(path: Path) -> int | None:
    text = _read(path)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def find_battery(root: Path) -> Path | None:
    """The first supply of type Battery that reports a capacity."""
    if not root.is_dir():
        return None
    for entry in sorted(root.iterdir()):
        if _read(entry / "type") == "Battery" and (entry / "capacity").exists():
            return entry
    return None


def read_supply(root: Path, battery: Path, mono_ns: int) -> PowerStatus:
    """A PowerStatus from the sysfs attributes (values in the kernel's units: uV, tenths of a degree)."""
    capacity = _number(battery / "capacity")
    if capacity is None:
        raise SensorError(f"{battery}/capacity is unreadable")
    status = _read(battery / "status") or "Unknown"
    external = any(
        _read(s / "type") in ("Mains", "USB", "USB_PD", "USB_C") and _read(s / "online") == "1"
        for s in (sorted(root.iterdir()) if root.is_dir() else [])
    )
    charging = status == "Charging"
    volts = _number(battery / "voltage_now")
    temp = _number(battery / "temp")
    return PowerStatus(
        mono_ns=mono_ns,
        battery_pct=float(max(0, min(100, capacity))),
        charging=charging,
        external_power=external or charging or status == "Full",
        temperature_c=temp / 10 if temp is not None else None,
        voltage_v=round(volts / 1e6, 4) if volts is not None else None,
    )


@register("power", "sysfs")
class SysfsBattery:
    """Battery level from the kernel's power_supply class in sysfs.

    Any battery the kernel knows (a fuel-gauge driver such as max17040, bq27xxx, or a PMIC).

    ``supply`` names the power_supply entry; empty picks the first battery. Thread-safe.
    """

    def __init__(self, *, name: str, clock: Clock, supply: str = "", root: str = str(ROOT)) -> None:
        self.name = check_name(name)
        self._clock = clock
        self._root = Path(root)
        self._supply = supply
        self._lock = threading.Lock()
        self._battery: Path | None = None
        self._gauge = GaugeReadings(self.name, "sysfs")

    @classmethod
    def probe(cls) -> Availability:
        battery = find_battery(ROOT)
        if battery is None:
            return Availability(False, f"device absent: no battery under {ROOT}")
        if not os.access(battery / "capacity", os.R_OK):
            return Availability(False, f"permission denied: {battery}/capacity")
        return Availability(True)

    def open(self) -> None:
        with self._lock:
            battery = self._root / self._supply if self._supply else find_battery(self._root)
            if battery is None or not (battery / "capacity").exists():
                error = f"no battery under {self._root}" + (f" named {self._supply}" if self._supply else "")
                self._gauge.last_error = error
                raise SensorError(f"{self.name}: {error}")
            self._battery = battery

    def close(self) -> None:
        with self._lock:
            self._battery = None

    def read(self) -> PowerStatus:
        with self._lock:
            battery = self._battery

            def measure() -> PowerStatus:
                assert battery is not None
                return read_supply(self._root, battery, self._clock.monotonic_ns())

            return self._gauge.read(battery is not None, measure, (SensorError,))

    def get_status(self) -> dict[str, object]:
        with self._lock:
            return self._gauge.status(self._battery is not None, ("battery_pct", "charging", "external_power"),
                                      supply=str(self._battery) if self._battery else None)
