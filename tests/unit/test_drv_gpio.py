"""Debounce and long-press logic with a fake clock; the GPIO input and indicator drivers on fake lines."""

from __future__ import annotations

import pytest

from drivers.debounce import BLINK_PERIOD_NS, PULSE_NS, ButtonLogic, pattern_level
from drivers.gpio_indicators import GpioIndicators
from drivers.gpio_inputs import GpioInputs, parse_lines
from hal.common import SensorError
from hal.indicators import Indicator, Pattern
from hal.inputs import Action, Control
from tests.fakes import FakeClock

MS = 1_000_000


def actions(events: list[object]) -> list[tuple[int, str]]:
    return [(e.mono_ns // MS, e.action.value) for e in events]  # type: ignore[attr-defined]


def test_a_bouncing_press_is_one_press_stamped_at_the_first_edge() -> None:
    b = ButtonLogic(Control.RECORD, debounce_ns=30 * MS, long_press_ns=2000 * MS)
    out = []
    for t, level in ((100, True), (102, False), (104, True), (107, False), (109, True)):
        out += b.edge(level, t * MS)
    assert out == [] and b.bounces == 4
    assert b.next_deadline_ns() == 139 * MS
    assert b.tick(138 * MS) == []
    out = b.tick(139 * MS)
    assert actions(out) == [(109, "press")], "stamped when the level that lasted began"
    assert b.pressed


def test_a_glitch_shorter_than_the_debounce_time_is_ignored() -> None:
    b = ButtonLogic(Control.MARK, debounce_ns=30 * MS)
    assert b.edge(True, 0) == [] and b.edge(False, 10 * MS) == []
    assert b.tick(1000 * MS) == [] and not b.pressed


def test_long_press_fires_once_while_held_then_release() -> None:
    b = ButtonLogic(Control.RECORD, debounce_ns=30 * MS, long_press_ns=2000 * MS)
    b.edge(True, 0)
    assert actions(b.tick(30 * MS)) == [(0, "press")]
    assert b.next_deadline_ns() == 2000 * MS
    assert b.tick(1999 * MS) == []
    assert actions(b.tick(2500 * MS)) == [(2000, "long-press")]
    assert b.tick(5000 * MS) == [] and b.next_deadline_ns() is None
    b.edge(False, 6000 * MS)
    assert actions(b.tick(6030 * MS)) == [(6000, "release")]


def test_a_short_press_has_no_long_press() -> None:
    b = ButtonLogic(Control.RECORD, debounce_ns=30 * MS, long_press_ns=2000 * MS)
    events = b.edge(True, 0) + b.tick(40 * MS) + b.edge(False, 500 * MS) + b.tick(3000 * MS)
    assert actions(events) == [(0, "press"), (500, "release")]


def test_contacts_have_no_long_press_and_can_start_closed() -> None:
    holster = ButtonLogic(Control.SIGNAL, debounce_ns=50 * MS, long_press_ns=None, initial=True)
    assert holster.pressed
    holster.edge(False, 1000 * MS)  # weapon drawn: contact opens
    assert actions(holster.tick(1050 * MS)) == [(1000, "release")]
    assert holster.tick(60_000 * MS) == []


def test_options_are_checked() -> None:
    with pytest.raises(ValueError):
        ButtonLogic(Control.RECORD, debounce_ns=50 * MS, long_press_ns=40 * MS)
    with pytest.raises(ValueError, match="unknown control 'fire'"):
        parse_lines({"fire": 3})
    with pytest.raises(ValueError, match="same line"):
        parse_lines({"record": 3, "mark": 3})


def test_patterns() -> None:
    assert pattern_level(Pattern.ON, 0, 10**12) and not pattern_level(Pattern.OFF, 0, 5)
    assert pattern_level(Pattern.BLINK, 0, 0) and not pattern_level(Pattern.BLINK, 0, BLINK_PERIOD_NS // 2)
    assert pattern_level(Pattern.BLINK, 0, BLINK_PERIOD_NS)
    assert pattern_level(Pattern.PULSE, 0, PULSE_NS - 1) and not pattern_level(Pattern.PULSE, 0, PULSE_NS)


class FakeEdges:
    """Scripted edges at given times; waiting advances the fake clock as the kernel's wait would take time."""

    def __init__(self, clock: FakeClock, script: list[tuple[int, int, bool]], levels: dict[int, bool]) -> None:
        self._clock = clock
        self._script = sorted(script)  # (ms, offset, level)
        self._levels = levels
        self.closed = False

    def wait(self, timeout_s: float) -> bool:
        now = self._clock.monotonic_ns()
        if self._script and self._script[0][0] * MS <= now + timeout_s * 1e9:
            self._clock.advance_ns(max(0, self._script[0][0] * MS - now))
            return True
        self._clock.advance_ns(round(timeout_s * 1e9))
        return False

    def read(self) -> list[tuple[int, bool, int]]:
        now = self._clock.monotonic_ns()
        due = [(o, lv, t * MS) for t, o, lv in self._script if t * MS <= now]
        self._script = [s for s in self._script if s[0] * MS > now]
        return due

    def levels(self) -> dict[int, bool]:
        return dict(self._levels)

    def close(self) -> None:
        self.closed = True


def test_gpio_inputs_driver_debounces_real_edge_streams() -> None:
    clock = FakeClock(start_mono_ns=0)
    script = [(100, 17, True), (103, 17, False), (105, 17, True),  # record pressed with bounce
              (3000, 17, False),  # released after a long press
              (4000, 27, True), (4200, 27, False),  # a mark tap
              (5000, 22, False)]  # holster contact opens  # fmt: skip
    edges = FakeEdges(clock, script, {22: True})
    with GpioInputs(name="inputs", clock=clock, lines={"record": 17, "mark": 27, "signal": 22}, edges=edges) as gpio:
        assert gpio.contact_closed(Control.SIGNAL) is True
        events = []
        while (event := gpio.read(10.0)) is not None:
            events.append(event)
        status = gpio.get_status()
    assert [(e.mono_ns // MS, e.control.value, e.action.value) for e in events] == [
        (105, "record", "press"), (2105, "record", "long-press"), (3000, "record", "release"),
        (4000, "mark", "press"), (4200, "mark", "release"), (5000, "signal", "release"),
    ]  # fmt: skip
    assert status["bounces"] == 2 and status["delivered"] == 6
    assert events[1].action is Action.LONG_PRESS
    with pytest.raises(SensorError, match="read while closed"):
        gpio.read(0)


class FakeOutputs:
    def __init__(self) -> None:
        self.writes: list[dict[int, bool]] = []

    def set(self, levels: dict[int, bool]) -> None:
        self.writes.append(dict(levels))

    def close(self) -> None:
        pass


def test_gpio_indicators_drive_patterns_on_the_fake_clock() -> None:
    clock = FakeClock(start_mono_ns=0)
    out = FakeOutputs()
    ind = GpioIndicators(name="ind", clock=clock, lines={"recording-led": 23, "haptic": 24}, run_thread=False,
                         outputs=out)
    ind.open()
    assert out.writes == [{23: False, 24: False}]
    ind.set(Indicator.RECORDING_LED, Pattern.BLINK)
    ind.set(Indicator.HAPTIC, Pattern.PULSE)
    ind.set(Indicator.BUZZER, Pattern.ON)  # no line: remembered, drives nothing
    assert out.writes[-1] == {24: True}
    clock.advance_ns(PULSE_NS)
    ind.refresh()
    assert out.writes[-1] == {24: False}, "the pulse ends by itself"
    clock.advance_ns(BLINK_PERIOD_NS // 2 - PULSE_NS)
    ind.refresh()
    assert out.writes[-1] == {23: False}, "blink half period"
    assert ind.state()[Indicator.BUZZER] is Pattern.ON
    ind.close()
    assert out.writes[-1] == {23: False, 24: False}, "everything off at close"
