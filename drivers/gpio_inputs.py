"""Record and mark buttons and the holster/signal contact on GPIO character devices (libgpiod v2 bindings)."""

from __future__ import annotations

import collections
import datetime
import importlib
import importlib.util
import threading
from collections.abc import Mapping
from typing import Any, Protocol

from drivers.debounce import ButtonLogic
from drivers.gpio_common import gpiod_availability
from drivers.pacing import check_bool, check_int, check_name
from drivers.registry import register
from hal.clock import Clock
from hal.common import Availability, SensorError
from hal.inputs import Control, InputEvent

CONTACTS = (Control.SIGNAL, Control.STEALTH, Control.MUTE)  # switches held in a position, not pressed


class EdgeSource(Protocol):
    """Edges of the requested lines: (line offset, level after the edge, CLOCK_MONOTONIC ns)."""

    def wait(self, timeout_s: float) -> bool: ...

    def read(self) -> list[tuple[int, bool, int]]: ...

    def levels(self) -> dict[int, bool]: ...

    def close(self) -> None: ...


class GpiodEdges:
    """libgpiod v2: lines as inputs with pull-up (or down), both edges, active level as asked.

    The kernel stamps edges with CLOCK_MONOTONIC, the same clock as the agent's monotonic time.
    """

    def __init__(self, chip: str, offsets: list[int], active_low: bool, pull_up: bool) -> None:
        try:
            gpiod: Any = importlib.import_module("gpiod")
            line: Any = importlib.import_module("gpiod.line")
        except ImportError as exc:
            raise SensorError("the gpiod (libgpiod v2) Python bindings are not installed: pip install gpiod") from exc
        settings = gpiod.LineSettings(
            direction=line.Direction.INPUT,
            edge_detection=line.Edge.BOTH,
            bias=line.Bias.PULL_UP if pull_up else line.Bias.PULL_DOWN,
            active_low=active_low,
            event_clock=line.Clock.MONOTONIC,
        )
        try:
            self._request = gpiod.request_lines(chip, consumer="bodycam-inputs", config={tuple(offsets): settings})
        except OSError as exc:
            raise SensorError(f"requesting lines {offsets} on {chip}: {exc.strerror or exc}") from exc
        self._offsets = offsets
        self._active = line.Value.ACTIVE
        self._rising = gpiod.EdgeEvent.Type.RISING_EDGE  # with active_low the kernel reports logical edges

    def wait(self, timeout_s: float) -> bool:
        return bool(self._request.wait_edge_events(datetime.timedelta(seconds=max(0.0, timeout_s))))

    def read(self) -> list[tuple[int, bool, int]]:
        return [(e.line_offset, e.event_type == self._rising, e.timestamp_ns) for e in self._request.read_edge_events()]

    def levels(self) -> dict[int, bool]:
        values = self._request.get_values(self._offsets)
        return {k: v == self._active for k, v in zip(self._offsets, values, strict=True)}

    def close(self) -> None:
        self._request.release()


def parse_lines(lines: object) -> dict[Control, int]:
    """The ``lines`` option: a table of control name to line offset, e.g. {record = 17, mark = 27}."""
    if not isinstance(lines, Mapping) or not lines:
        raise ValueError(f"lines: expected a table like {{record = 17, mark = 27}}, got {lines!r}")
    out: dict[Control, int] = {}
    for key, offset in lines.items():
        try:
            control = Control(str(key))
        except ValueError:
            known = ", ".join(c.value for c in Control)
            raise ValueError(f"lines: unknown control {key!r} (known: {known})") from None
        out[control] = check_int(f"lines.{key}", offset, 0, 1023)
    if len(set(out.values())) != len(out):
        raise ValueError("lines: two controls on the same line")
    return out


@register("inputs", "gpio")
class GpioInputs:
    """Record and mark buttons and holster/signal contacts on GPIO lines (libgpiod), debounced.

    Debounced in software with the kernel's edge timestamps.

    Buttons (record, mark) give PRESS, LONG_PRESS (once per hold) and RELEASE; contacts
    (signal, stealth, mute) give PRESS when closed and RELEASE when opened. ``read`` is for one
    consumer thread; ``get_status`` is safe from any thread.
    """

    def __init__(
        self,
        *,
        name: str,
        clock: Clock,
        chip: str = "/dev/gpiochip0",
        lines: Mapping[str, int] | None = None,
        active_low: bool = True,
        pull_up: bool = True,
        debounce_ms: int = 30,
        long_press_ms: int = 2000,
        edges: EdgeSource | None = None,
    ) -> None:
        self.name = check_name(name)
        self._clock = clock
        self._chip = chip
        self._lines = parse_lines(lines if lines is not None else {"record": 17, "mark": 27, "signal": 22})
        self._active_low = check_bool("active_low", active_low)
        self._pull_up = check_bool("pull_up", pull_up)
        self._debounce_ns = check_int("debounce_ms", debounce_ms, 0, 1000) * 1_000_000
        self._long_ns = check_int("long_press_ms", long_press_ms, 100, 30_000) * 1_000_000
        if self._long_ns <= self._debounce_ns:
            raise ValueError("long_press_ms must be longer than debounce_ms")
        self._given = edges
        self._lock = threading.Lock()
        self._edges: EdgeSource | None = None
        self._logic: dict[int, ButtonLogic] = {}
        self._queue: collections.deque[InputEvent] = collections.deque()
        self._delivered = 0
        self._last_error: str | None = None

    @classmethod
    def probe(cls) -> Availability:
        return gpiod_availability()

    def open(self) -> None:
        with self._lock:
            if self._edges is not None:
                return
            try:
                edges = self._given or GpiodEdges(self._chip, sorted(self._lines.values()), self._active_low,
                                                  self._pull_up)
            except SensorError as exc:
                self._last_error = str(exc)
                raise SensorError(f"{self.name}: {exc}") from exc
            levels = edges.levels()
            self._logic = {
                offset: ButtonLogic(control, debounce_ns=self._debounce_ns,
                                    long_press_ns=None if control in CONTACTS else self._long_ns,
                                    initial=levels.get(offset, False))
                for control, offset in self._lines.items()
            }  # fmt: skip
            self._queue.clear()
            self._edges = edges

    def close(self) -> None:
        with self._lock:
            edges, self._edges = self._edges, None
        if edges is not None and self._given is None:
            edges.close()

    def __enter__(self) -> GpioInputs:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def contact_closed(self, control: Control) -> bool | None:
        """The debounced state of a line (a holster contact at start-up), None if not configured."""
        offset = self._lines.get(control)
        logic = self._logic.get(offset) if offset is not None else None
        return logic.pressed if logic is not None else None

    def read(self, timeout_s: float) -> InputEvent | None:
        """The next debounced event, waiting up to ``timeout_s`` seconds (0 or less polls)."""
        deadline = self._clock.monotonic_ns() + round(max(timeout_s, 0.0) * 1e9)
        while True:
            edges = self._edges
            if edges is None:
                raise SensorError(f"{self.name}: read while closed")
            now = self._clock.monotonic_ns()
            for logic in self._logic.values():
                self._queue.extend(logic.tick(now))
            if self._queue:
                self._delivered += 1
                return self._queue.popleft()
            if now >= deadline:
                return None
            wake = min([deadline] + [d for d in (lg.next_deadline_ns() for lg in self._logic.values()) if d])
            try:
                if edges.wait(max(0, wake - now) / 1e9):
                    for offset, level, at_ns in edges.read():
                        line = self._logic.get(offset)
                        if line is not None:
                            self._queue.extend(line.edge(level, at_ns))
            except OSError as exc:
                self._last_error = f"reading GPIO edges: {exc}"
                raise SensorError(f"{self.name}: {self._last_error}") from exc
            self._queue = collections.deque(sorted(self._queue, key=lambda e: e.mono_ns))

    def get_status(self) -> dict[str, object]:
        return {
            "name": self.name,
            "driver": "gpio",
            "open": self._edges is not None,
            "chip": self._chip,
            "lines": {c.value: o for c, o in self._lines.items()},
            "closed": [lg.control.value for lg in self._logic.values() if lg.pressed],
            "bounces": sum(lg.bounces for lg in self._logic.values()),
            "delivered": self._delivered,
            "dropped": 0,
            "last_error": self._last_error,
        }
