"""Simulated buttons and contacts: presses played from a script of "seconds:control[:action]" entries."""

from __future__ import annotations

import heapq
import math
import threading
from pathlib import Path

from drivers.pacing import check_name, check_path
from drivers.registry import register
from hal.clock import Clock
from hal.common import SensorError
from hal.inputs import Action, Control, InputEvent

_NS_PER_S = 1_000_000_000
ScriptEntry = tuple[float, Control, Action]


def parse_script(text: str, *, option: str = "script", separator: str = ",") -> list[ScriptEntry]:
    """Entries like ``5:record`` or ``12.5:mark:long-press`` (seconds after open), sorted by time.

    Blank entries and, in files, ``#`` comments are ignored. Raises ValueError naming ``option``,
    the entry and what is wrong with it.
    """
    entries: list[ScriptEntry] = []
    for number, raw in enumerate(text.split(separator), start=1):
        entry = raw.split("#", 1)[0].strip() if separator == "\n" else raw.strip()
        if not entry:
            continue
        where = f"{option}: entry {number} {entry!r}"
        parts = [p.strip() for p in entry.split(":")]
        if len(parts) not in (2, 3):
            raise ValueError(f"{where}: expected seconds:control[:action]")
        try:
            at_s = float(parts[0])
        except ValueError:
            raise ValueError(f"{where}: {parts[0]!r} is not a number of seconds") from None
        if not math.isfinite(at_s) or at_s < 0:
            raise ValueError(f"{where}: seconds must be a finite number >= 0")
        try:
            control = Control(parts[1].lower())
        except ValueError:
            known = ", ".join(c.value for c in Control)
            raise ValueError(f"{where}: unknown control {parts[1]!r} (known: {known})") from None
        try:
            action = Action(parts[2].lower()) if len(parts) == 3 else Action.PRESS
        except ValueError:
            known = ", ".join(a.value for a in Action)
            raise ValueError(f"{where}: unknown action {parts[2]!r} (known: {known})") from None
        entries.append((at_s, control, action))
    return sorted(entries, key=lambda e: e[0])


@register("inputs", "sim")
class SimInputs:
    """Buttons pressed by a script, so a simulated unit records and marks at known times.

    ``inject`` adds an event now (a console or test pressing a button). Events are never
    dropped. ``read`` is for one consumer thread; ``inject``, ``open``, ``close`` and
    ``get_status`` are safe from any thread. An injected event is seen at the reader's next
    wake-up, at most one read timeout later.
    """

    def __init__(self, *, name: str, clock: Clock, script: str = "", script_file: str | Path | None = None) -> None:
        self.name = check_name(name)
        self._clock = clock
        if not isinstance(script, str):
            raise ValueError(f"script: expected a string like '5:record,12:mark', got {script!r}")
        if script_file is not None:
            if script:
                raise ValueError("script, script_file: give one or the other, not both")
            path = check_path("script_file", script_file)
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError(f"script_file: cannot read {path}: {exc}") from exc
            self._script = parse_script(text, option=f"script_file {path}", separator="\n")
        else:
            self._script = parse_script(script)
        self._lock = threading.Lock()
        self._pending: list[tuple[int, int, Control, Action]] = []
        self._sequence = 0
        self._open = False
        self._delivered = 0

    @property
    def script(self) -> list[ScriptEntry]:
        return list(self._script)

    def open(self) -> None:
        """Start the script's timeline now; opening an open device does nothing."""
        with self._lock:
            if self._open:
                return
            t0 = self._clock.monotonic_ns()
            self._pending = []
            for at_s, control, action in self._script:
                self._push(t0 + round(at_s * _NS_PER_S), control, action)
            self._open = True
            self._delivered = 0

    def close(self) -> None:
        with self._lock:
            self._open = False
            self._pending = []

    def inject(self, control: Control, action: Action = Action.PRESS) -> None:
        """Queue an event happening now."""
        with self._lock:
            if not self._open:
                raise SensorError(f"{self.name}: inject while closed")
            self._push(self._clock.monotonic_ns(), control, action)

    def _push(self, due_ns: int, control: Control, action: Action) -> None:
        heapq.heappush(self._pending, (due_ns, self._sequence, control, action))
        self._sequence += 1

    def read(self, timeout_s: float) -> InputEvent | None:
        """The next event once it is due, waiting up to ``timeout_s`` (0 polls); None on timeout."""
        timeout_ns = round(timeout_s * _NS_PER_S) if timeout_s > 0 and math.isfinite(timeout_s) else 0
        deadline = self._clock.monotonic_ns() + timeout_ns
        while True:
            now = self._clock.monotonic_ns()
            with self._lock:
                if not self._open:
                    raise SensorError(f"{self.name}: read while closed")
                if self._pending and self._pending[0][0] <= now:
                    due_ns, _, control, action = heapq.heappop(self._pending)
                    self._delivered += 1
                    return InputEvent(due_ns, control, action)
                wake = min(deadline, self._pending[0][0]) if self._pending else deadline
            if now >= deadline:
                return None
            self._clock.sleep((wake - now) / _NS_PER_S)

    def get_status(self) -> dict[str, object]:
        with self._lock:
            return {
                "name": self.name,
                "driver": "sim",
                "open": self._open,
                "delivered": self._delivered,
                "pending": len(self._pending),
                "dropped": 0,
                "last_error": None,
            }
