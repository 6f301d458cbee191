"""Recording LED, status LED, haptic motor and buzzer on GPIO character devices (libgpiod v2 bindings)."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import threading
from collections.abc import Mapping
from typing import Any, Protocol

from drivers.debounce import pattern_level
from drivers.gpio_common import gpiod_availability
from drivers.pacing import check_bool, check_int, check_name
from drivers.registry import register
from hal.clock import Clock
from hal.common import Availability, SensorError
from hal.indicators import Indicator, Pattern

log = logging.getLogger(__name__)
REFRESH_S = 0.05  # blink and pulse resolution


class OutputLines(Protocol):
    def set(self, levels: dict[int, bool]) -> None: ...

    def close(self) -> None: ...


class GpiodOutputs:
    """libgpiod v2 output lines, all starting inactive (off)."""

    def __init__(self, chip: str, offsets: list[int], active_low: bool) -> None:
        try:
            gpiod: Any = importlib.import_module("gpiod")
            line: Any = importlib.import_module("gpiod.line")
        except ImportError as exc:
            raise SensorError("the gpiod (libgpiod v2) Python bindings are not installed: pip install gpiod") from exc
        settings = gpiod.LineSettings(direction=line.Direction.OUTPUT, output_value=line.Value.INACTIVE,
                                      active_low=active_low)
        try:
            self._request = gpiod.request_lines(chip, consumer="bodycam-indicators", config={tuple(offsets): settings})
        except OSError as exc:
            raise SensorError(f"requesting lines {offsets} on {chip}: {exc.strerror or exc}") from exc
        self._on, self._off = line.Value.ACTIVE, line.Value.INACTIVE

    def set(self, levels: dict[int, bool]) -> None:
        self._request.set_values({k: self._on if v else self._off for k, v in levels.items()})

    def close(self) -> None:
        self._request.release()


def parse_outputs(lines: object) -> dict[Indicator, int]:
    if not isinstance(lines, Mapping) or not lines:
        raise ValueError(f"lines: expected a table like {{recording-led = 23}}, got {lines!r}")
    out: dict[Indicator, int] = {}
    for key, offset in lines.items():
        try:
            indicator = Indicator(str(key))
        except ValueError:
            known = ", ".join(i.value for i in Indicator)
            raise ValueError(f"lines: unknown indicator {key!r} (known: {known})") from None
        out[indicator] = check_int(f"lines.{key}", offset, 0, 1023)
    return out


@register("indicators", "gpio")
class GpioIndicators:
    """Recording LED, status LED, haptic motor and buzzer on GPIO lines (libgpiod).

    BLINK and PULSE are timed by a refresh thread on the injected clock.

    Indicators with no line configured are remembered but drive nothing. Every method is
    thread-safe; ``refresh`` is what the thread calls, and tests call it directly.
    """

    def __init__(
        self,
        *,
        name: str,
        clock: Clock,
        chip: str = "/dev/gpiochip0",
        lines: Mapping[str, int] | None = None,
        active_low: bool = False,
        run_thread: bool = True,
        outputs: OutputLines | None = None,
    ) -> None:
        self.name = check_name(name)
        self._clock = clock
        self._chip = chip
        self._lines = parse_outputs(lines if lines is not None else {"recording-led": 23, "haptic": 24, "buzzer": 25})
        self._active_low = check_bool("active_low", active_low)
        self._run_thread = check_bool("run_thread", run_thread)
        self._given = outputs
        self._lock = threading.Lock()
        self._outputs: OutputLines | None = None
        self._patterns: dict[Indicator, tuple[Pattern, int]] = {i: (Pattern.OFF, 0) for i in Indicator}
        self._levels: dict[int, bool] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_error: str | None = None

    @classmethod
    def probe(cls) -> Availability:
        return gpiod_availability()

    def open(self) -> None:
        with self._lock:
            if self._outputs is not None:
                return
            try:
                self._outputs = self._given or GpiodOutputs(self._chip, sorted(self._lines.values()), self._active_low)
            except SensorError as exc:
                self._last_error = str(exc)
                raise SensorError(f"{self.name}: {exc}") from exc
            self._levels = {}
        self.refresh()
        if self._run_thread:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name=f"{self.name}-indicators", daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
            self._thread = None
        with self._lock:
            outputs, self._outputs = self._outputs, None
            if outputs is not None:
                try:
                    outputs.set(dict.fromkeys(self._lines.values(), False))  # everything off
                finally:
                    if self._given is None:
                        outputs.close()

    def set(self, indicator: Indicator, pattern: Pattern) -> None:
        if not isinstance(indicator, Indicator) or not isinstance(pattern, Pattern):
            raise TypeError(f"set() takes an Indicator and a Pattern, got {indicator!r}, {pattern!r}")
        with self._lock:
            if self._patterns[indicator][0] is pattern and pattern is not Pattern.PULSE:
                return
            self._patterns[indicator] = (pattern, self._clock.monotonic_ns())
        self.refresh()

    def state(self) -> dict[Indicator, Pattern]:
        with self._lock:
            return {i: p for i, (p, _) in self._patterns.items()}

    def refresh(self) -> None:
        """Drive every line to the level its pattern asks for now; only changed lines are written."""
        with self._lock:
            if self._outputs is None:
                return
            now = self._clock.monotonic_ns()
            wanted = {self._lines[i]: pattern_level(p, since, now)
                      for i, (p, since) in self._patterns.items() if i in self._lines}  # fmt: skip
            changed = {k: v for k, v in wanted.items() if self._levels.get(k) != v}
            if not changed:
                return
            try:
                self._outputs.set(changed)
            except OSError as exc:
                self._last_error = f"setting GPIO lines: {exc}"
                log.warning("%s: %s", self.name, self._last_error)
                return
            self._levels.update(changed)

    def _loop(self) -> None:
        while not self._stop.wait(REFRESH_S):
            self.refresh()

    def get_status(self) -> dict[str, object]:
        with self._lock:
            status: dict[str, object] = {"name": self.name, "driver": "gpio", "open": self._outputs is not None}
            status.update({i.value: p.value for i, (p, _) in self._patterns.items()})
            status["last_error"] = self._last_error
            return status
