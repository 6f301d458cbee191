"""Pure button and contact logic: contact bounce to one press, long-press detection, indicator patterns.

Time is always an argument (``now_ns``, edge timestamps), so tests drive it with a fake clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from hal.indicators import Pattern
from hal.inputs import Action, Control, InputEvent

_MS = 1_000_000


@dataclass
class _State:
    stable: bool = False  # the debounced level (True: pressed / contact closed)
    raw: bool = False
    raw_since_ns: int = 0
    pressed_at_ns: int | None = None
    long_sent: bool = False


class ButtonLogic:
    """One input line. A level counts once it has been stable for ``debounce_ns``; the event is
    stamped with the edge that started that level (the moment the officer pressed). With
    ``long_press_ns`` a button held that long also gives LONG_PRESS, once per hold. A contact
    (``long_press_ns=None``) gives PRESS on closing and RELEASE on opening.

    Not thread-safe: one reader feeds it.
    """

    def __init__(self, control: Control, *, debounce_ns: int = 30 * _MS, long_press_ns: int | None = 2000 * _MS,
                 initial: bool = False) -> None:  # fmt: skip
        if debounce_ns < 0 or (long_press_ns is not None and long_press_ns <= debounce_ns):
            raise ValueError("need 0 <= debounce < long press")
        self.control = control
        self.debounce_ns = debounce_ns
        self.long_press_ns = long_press_ns
        self._s = _State(stable=initial, raw=initial)
        self.bounces = 0

    @property
    def pressed(self) -> bool:
        return self._s.stable

    def edge(self, level: bool, at_ns: int) -> list[InputEvent]:
        """A raw level change seen at ``at_ns`` (kernel edge timestamp)."""
        out = self.tick(at_ns)
        s = self._s
        if level == s.raw:
            return out
        if at_ns - s.raw_since_ns < self.debounce_ns:
            self.bounces += 1
        s.raw, s.raw_since_ns = level, at_ns
        return out

    def tick(self, now_ns: int) -> list[InputEvent]:
        """Let time pass to ``now_ns``: commit a level that has settled, fire a due long press."""
        s = self._s
        out: list[InputEvent] = []
        if s.raw != s.stable and now_ns - s.raw_since_ns >= self.debounce_ns:
            s.stable = s.raw
            if s.stable:
                s.pressed_at_ns, s.long_sent = s.raw_since_ns, False
                out.append(InputEvent(s.raw_since_ns, self.control, Action.PRESS))
            else:
                s.pressed_at_ns = None
                out.append(InputEvent(s.raw_since_ns, self.control, Action.RELEASE))
        if (self.long_press_ns is not None and s.stable and s.pressed_at_ns is not None and not s.long_sent
                and now_ns - s.pressed_at_ns >= self.long_press_ns):  # fmt: skip
            s.long_sent = True
            out.append(InputEvent(s.pressed_at_ns + self.long_press_ns, self.control, Action.LONG_PRESS))
        return out

    def next_deadline_ns(self) -> int | None:
        """When ``tick`` may next produce something without a new edge (None: not before an edge)."""
        s = self._s
        if s.raw != s.stable:
            return s.raw_since_ns + self.debounce_ns
        if self.long_press_ns is not None and s.stable and s.pressed_at_ns is not None and not s.long_sent:
            return s.pressed_at_ns + self.long_press_ns
        return None


BLINK_PERIOD_NS = 1000 * _MS
PULSE_NS = 150 * _MS


def pattern_level(pattern: Pattern, since_ns: int, now_ns: int) -> bool:
    """Whether an output is on at ``now_ns`` for ``pattern`` set at ``since_ns``.

    BLINK: 1 Hz, half on, starting on. PULSE: one 150 ms burst, then off.
    """
    if pattern is Pattern.ON:
        return True
    if pattern is Pattern.BLINK:
        return (now_ns - since_ns) % BLINK_PERIOD_NS < BLINK_PERIOD_NS // 2
    if pattern is Pattern.PULSE:
        return now_ns - since_ns < PULSE_NS
    return False
