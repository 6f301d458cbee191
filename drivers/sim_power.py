"""A simulated battery gauge: drains (or charges) linearly with clock time, warm as a worn camera is."""

from __future__ import annotations

import math
import threading

from drivers.battery_common import GaugeReadings
from drivers.pacing import check_bool, check_float, check_name
from drivers.registry import register
from hal.clock import Clock
from hal.power import PowerStatus

_NS_PER_HOUR = 3600 * 1_000_000_000


@register("power", "sim")
class SimPower:
    """A fuel gauge whose level is a pure function of clock time since open.

    ``set_charging`` docks or undocks the unit. Every method is thread-safe.
    """

    def __init__(
        self,
        *,
        name: str,
        clock: Clock,
        start_pct: float = 100.0,
        drain_pct_per_hour: float = 12.0,
        charge_pct_per_hour: float = 40.0,
        charging: bool = False,
        temperature_c: float = 35.0,
    ) -> None:
        self.name = check_name(name)
        self._clock = clock
        self._start_pct = check_float("start_pct", start_pct, 0.0, 100.0)
        self._drain = check_float("drain_pct_per_hour", drain_pct_per_hour, 0.0, 1000.0)
        self._charge = check_float("charge_pct_per_hour", charge_pct_per_hour, 0.0, 1000.0)
        self._start_charging = check_bool("charging", charging)
        self._temperature_c = check_float("temperature_c", temperature_c, -40.0, 100.0)
        self._lock = threading.Lock()
        self._anchor: tuple[int, float] | None = None  # (mono_ns, pct) when last opened or (un)docked
        self._charging = self._start_charging
        self._gauge = GaugeReadings(self.name, "sim")
        self._opened_ns = 0

    def open(self) -> None:
        with self._lock:
            if self._anchor is None:
                self._opened_ns = self._clock.monotonic_ns()
                self._anchor = (self._opened_ns, self._start_pct)
                self._charging = self._start_charging

    def close(self) -> None:
        with self._lock:
            self._anchor = None

    def set_charging(self, charging: bool) -> None:
        """Dock (True) or undock (False) from now on."""
        with self._lock:
            now = self._clock.monotonic_ns()
            if self._anchor is not None:
                self._anchor = (now, self._level(now))
            self._charging = charging

    def _level(self, now_ns: int) -> float:
        assert self._anchor is not None
        since_ns, pct = self._anchor
        rate = self._charge if self._charging else -self._drain
        return min(100.0, max(0.0, pct + rate * (now_ns - since_ns) / _NS_PER_HOUR))

    def read(self) -> PowerStatus:
        """The gauge now; raises SensorError when closed."""
        with self._lock:
            return self._gauge.read(self._anchor is not None, self._measure)

    def _measure(self) -> PowerStatus:
        now = self._clock.monotonic_ns()
        pct = self._level(now)
        elapsed_s = (now - self._opened_ns) / 1e9
        return PowerStatus(
            mono_ns=now,
            battery_pct=round(pct, 2),
            charging=self._charging and pct < 100.0,
            external_power=self._charging,
            temperature_c=round(self._temperature_c + 0.5 * math.sin(elapsed_s / 300), 2),
            voltage_v=round(3.3 + 0.9 * pct / 100, 3),  # a Li-ion cell from empty to full
        )

    def get_status(self) -> dict[str, object]:
        with self._lock:
            return self._gauge.status(self._anchor is not None, ("battery_pct", "temperature_c"),
                                      charging=self._charging)
