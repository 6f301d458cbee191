"""Simulated LEDs, haptic motor and buzzer: remember and log each pattern."""

from __future__ import annotations

import logging
import threading
from collections import deque

from drivers.pacing import check_name
from drivers.registry import register
from hal.clock import Clock
from hal.indicators import Indicator, Pattern

log = logging.getLogger(__name__)


@register("indicators", "sim")
class SimIndicators:
    """Indicators that only remember what they were told, so tests and the console can see it.

    All indicators start OFF. Changes are logged at INFO and kept (with their monotonic time)
    in a bounded ``history``. Every method is thread-safe.
    """

    def __init__(self, *, name: str, clock: Clock) -> None:
        self.name = check_name(name)
        self._clock = clock
        self._lock = threading.Lock()
        self._state = {indicator: Pattern.OFF for indicator in Indicator}
        self._history: deque[tuple[int, Indicator, Pattern]] = deque(maxlen=1000)
        self._changes = 0
        self._open = False

    def open(self) -> None:
        with self._lock:
            self._open = True

    def close(self) -> None:
        with self._lock:
            self._open = False

    def set(self, indicator: Indicator, pattern: Pattern) -> None:
        if not isinstance(indicator, Indicator) or not isinstance(pattern, Pattern):
            raise TypeError(f"set() takes an Indicator and a Pattern, got {indicator!r}, {pattern!r}")
        with self._lock:
            if self._state[indicator] is pattern and pattern is not Pattern.PULSE:
                return
            self._state[indicator] = pattern
            self._history.append((self._clock.monotonic_ns(), indicator, pattern))
            self._changes += 1
        log.info("%s: %s -> %s", self.name, indicator.value, pattern.value)

    def state(self) -> dict[Indicator, Pattern]:
        with self._lock:
            return dict(self._state)

    @property
    def history(self) -> list[tuple[int, Indicator, Pattern]]:
        """The last 1000 changes as (monotonic ns, indicator, pattern), oldest first."""
        with self._lock:
            return list(self._history)

    def get_status(self) -> dict[str, object]:
        with self._lock:
            status: dict[str, object] = {"name": self.name, "driver": "sim", "open": self._open}
            status.update({i.value: p.value for i, p in self._state.items()})
            status["changes"] = self._changes
            status["last_error"] = None
            return status
