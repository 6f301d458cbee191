"""The recorder's mode machine, pure: every transition of the table, each handler's effects."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from agent.recorder import mode as m
from agent.recorder.mode import (
    BeginRecording,
    CommandError,
    DropAudio,
    DropPreEvent,
    FinishRecording,
    FlagSegments,
    Indicate,
    Mode,
    Outcome,
    Persist,
    Sign,
)
from agent.state import TRANSITIONS, Event, State
from agent.storage import StorageLevel
from hal.indicators import Indicator, Pattern

SENSORS = frozenset({"chest", "audio"})
READY = m.power_on(Mode(media_sensors=SENSORS)).mode


def recording(**changes: object) -> Mode:
    return dataclasses.replace(m.start(READY, "alice", "ctl", "rec-1").mode, **changes)  # type: ignore[arg-type]


def signs(out: Outcome) -> list[tuple[str, bool]]:
    return [(e.kind, e.required) for e in (*out.before, *out.after) if isinstance(e, Sign)]


def patterns(out: Outcome) -> dict[Indicator, Pattern]:
    shown = [e for e in out.after if isinstance(e, Indicate)]
    assert len(shown) == 1, out.after
    return dict(shown[0].patterns)


# -- every (state, event) of the table, reached through the handlers -----------------------------

ERROR_IDLE = m.sensor_fault(m.sensor_fault(READY, "chest", "gone").mode, "audio", "gone").mode
ERROR_RECORDING = m.open_fault(recording(), True).mode

SCENARIOS: dict[tuple[State, Event], Callable[[], tuple[Mode, Outcome]]] = {
    (State.OFF, Event.POWER_ON): lambda: (Mode(), m.power_on(Mode())),
    (State.READY, Event.RECORD): lambda: (READY, m.start(READY, "alice", "ctl", "rec-1")),
    (State.RECORDING, Event.STOP): lambda: (recording(), m.stop(recording(), "alice")),
    (State.READY, Event.FAULT): lambda: (
        m.sensor_fault(READY, "chest", "gone").mode,
        m.sensor_fault(m.sensor_fault(READY, "chest", "gone").mode, "audio", "gone"),
    ),
    (State.RECORDING, Event.FAULT): lambda: (recording(), m.open_fault(recording(), True)),
    (State.ERROR, Event.RECOVER): lambda: (ERROR_IDLE, m.sensor_recovered(ERROR_IDLE, "audio")),
    (State.OFF, Event.SHUTDOWN): lambda: (Mode(), m.shutdown(Mode())),
    (State.READY, Event.SHUTDOWN): lambda: (READY, m.shutdown(READY)),
    (State.RECORDING, Event.SHUTDOWN): lambda: (recording(), m.shutdown(recording())),
    (State.ERROR, Event.SHUTDOWN): lambda: (ERROR_RECORDING, m.shutdown(ERROR_RECORDING)),
}


def test_the_scenarios_cover_the_whole_table() -> None:
    assert set(SCENARIOS) == set(TRANSITIONS)


@pytest.mark.parametrize("pair", list(SCENARIOS), ids=lambda p: f"{p[0].name}-{p[1].name}")
def test_every_transition_of_the_table(pair: tuple[State, Event]) -> None:
    before, out = SCENARIOS[pair]()
    assert before.state is pair[0]
    assert out.mode.state is TRANSITIONS[pair]
    if out.mode.state is not before.state:
        assert any(isinstance(e, Persist) for e in out.after)  # every change of state is saved


# -- recording ---------------------------------------------------------------------------------


def test_start_is_signed_before_the_change_and_begins_the_recording() -> None:
    out = m.start(READY, "alice", "button", "rec-9")
    assert out.before == (Sign("record-start", {"trigger": "button", "by": "alice"}, "rec-9"),)
    assert out.mode.state is State.RECORDING and out.mode.recording_id == "rec-9"
    assert out.after[0] == BeginRecording("rec-9", "button") and Persist() in out.after
    assert patterns(out)[Indicator.RECORDING_LED] is Pattern.ON and patterns(out)[Indicator.HAPTIC] is Pattern.PULSE


@pytest.mark.parametrize("level", [StorageLevel.FULL, StorageLevel.EXHAUSTED])
def test_start_is_refused_when_storage_refuses(level: StorageLevel) -> None:
    with pytest.raises(CommandError, match=f"storage {level.value}"):
        m.start(dataclasses.replace(READY, storage=level), "alice", "ctl", "r")


def test_start_while_recording_and_stop_while_not_are_refused() -> None:
    with pytest.raises(CommandError, match="already recording"):
        m.start(recording(), "alice", "ctl", "r2")
    with pytest.raises(CommandError, match="already recording"):
        m.start(ERROR_RECORDING, "alice", "ctl", "r2")  # a recording interrupted by a fault is still on
    with pytest.raises(CommandError, match="not recording"):
        m.stop(READY, "alice")


def test_stop_seals_then_signs_best_effort() -> None:
    out = m.stop(recording(), "bob")
    assert out.after[:2] == (FinishRecording(), Sign("record-stop", {"by": "bob"}, "rec-1", required=False))
    assert out.answer == {"recording_id": "rec-1"} and out.mode.recording_id is None


def test_start_from_error_records_but_stays_in_error() -> None:
    out = m.start(ERROR_IDLE, "alice", "ctl", "r3")
    assert out.mode.state is State.ERROR and out.mode.recording_id == "r3"
    back = m.sensor_recovered(out.mode, "chest", signed=False)
    assert back.mode.state is State.RECORDING and signs(back) == []  # RECOVER then RECORD


def test_stop_in_error_ends_the_fault_of_the_recording() -> None:
    out = m.stop(ERROR_RECORDING, "alice")
    assert out.mode.state is State.READY and not out.mode.open_fault


def test_open_fault_clears_back_to_recording() -> None:
    out = m.open_fault(ERROR_RECORDING, False)
    assert out.mode.state is State.RECORDING and Persist() in out.after


def test_open_fault_never_applies_when_not_recording() -> None:
    assert m.open_fault(READY, True).mode == READY


def test_shutdown_while_recording_seals_and_signs_the_stop() -> None:
    out = m.shutdown(recording())
    assert out.after[:2] == (FinishRecording(), Sign("record-stop", {"by": "shutdown"}, "rec-1", required=False))
    assert out.mode.state is State.OFF and out.mode.recording_id is None


# -- sensors ----------------------------------------------------------------------------------


def test_one_failed_sensor_is_signed_without_a_fault() -> None:
    out = m.sensor_fault(recording(), "chest", "x" * 300)
    assert out.mode.state is State.RECORDING and out.after == (
        Sign("sensor-fault", {"sensor": "chest", "error": "x" * 200}, "rec-1"),
    )


def test_every_media_sensor_failed_is_a_fault_until_one_is_back() -> None:
    half = m.sensor_fault(recording(), "chest", "gone").mode
    out = m.sensor_fault(half, "audio", "gone")
    assert out.mode.state is State.ERROR and out.mode.recording_id == "rec-1"
    assert patterns(out)[Indicator.STATUS_LED] is Pattern.BLINK
    back = m.sensor_recovered(out.mode, "audio")
    assert back.mode.state is State.RECORDING and signs(back) == [("sensor-recovered", True)]


def test_a_sensor_that_is_not_media_never_faults_the_unit() -> None:
    assert m.sensor_fault(READY, "gnss", "gone").mode.state is State.READY


# -- storage level, a machine of its own ---------------------------------------------------------


@pytest.mark.parametrize("level", list(StorageLevel))
def test_every_storage_level_from_ok(level: StorageLevel) -> None:
    out = m.storage_level(recording(), level, 1234)
    if level is StorageLevel.OK:
        assert out.answer == {"level": "ok", "changed": False} and out.after == ()
        return
    kind = {"low": "storage-low", "critical": "storage-low"}.get(level.value, "storage-full")
    assert signs(out)[0] == (kind, False)
    assert (DropPreEvent in {type(e) for e in out.after}) is (level in m.NO_PRE_EVENT_LEVELS)
    stopped = level is StorageLevel.EXHAUSTED
    assert (FinishRecording() in out.after) is stopped
    assert out.mode.recording is not stopped and out.mode.storage is level
    assert patterns(out)[Indicator.STATUS_LED] is Pattern.BLINK
    assert (Indicator.BUZZER in patterns(out)) is (level in m.REFUSING_LEVELS)


def test_storage_back_to_ok_is_signed_and_buffers_again() -> None:
    out = m.storage_level(dataclasses.replace(READY, storage=StorageLevel.CRITICAL), StorageLevel.OK, 9)
    assert signs(out) == [("storage-ok", False)] and out.mode.buffering
    assert patterns(out)[Indicator.STATUS_LED] is Pattern.ON


# -- stealth and mute ---------------------------------------------------------------------------


def test_stealth_darkens_everything_and_flags_the_segment() -> None:
    out = m.set_stealth(recording(), "alice", True)
    assert out.after[:2] == (Sign("stealth-on", {"by": "alice"}, "rec-1"), FlagSegments("stealth"))
    assert set(patterns(out).values()) == {Pattern.OFF} and len(patterns(out)) == len(Indicator)
    assert m.set_stealth(out.mode, "alice", True).answer == {"stealth": True, "changed": False}
    off = m.set_stealth(out.mode, "alice", False)
    assert signs(off) == [("stealth-off", True)] and patterns(off)[Indicator.RECORDING_LED] is Pattern.ON


def test_mute_drops_buffered_audio_and_unmute_does_not() -> None:
    out = m.set_mute(READY, "alice", True)
    assert out.after == (Sign("mute-on", {"by": "alice"}, None), DropAudio(), FlagSegments("muted"))
    assert m.set_mute(out.mode, "alice", False).after == (Sign("mute-off", {"by": "alice"}, None),)
    assert m.set_mute(out.mode, "alice", True).answer == {"muted": True, "changed": False}


def test_a_standing_sync_alarm_is_signed_once_blinks_the_status_led_and_clears() -> None:
    ready = m.Mode(state=State.READY)
    raised = m.sync_alarm(ready, "auth", "headquarters refuses this unit", active=True, standing=True)
    assert raised.mode.sync_alarms == frozenset({"auth"})
    signs = [e for e in raised.after if isinstance(e, m.Sign)]
    assert [(s.kind, s.detail["kind"], s.required) for s in signs] == [("sync-alarm", "auth", False)]
    shown = dict(next(e for e in raised.after if isinstance(e, m.Indicate)).patterns)
    assert shown[Indicator.STATUS_LED] is Pattern.BLINK and shown[Indicator.HAPTIC] is Pattern.PULSE
    again = m.sync_alarm(raised.mode, "auth", "still refused", active=True, standing=True)
    assert again.after == () and again.mode == raised.mode  # raised again while it holds: nothing new
    cleared = m.sync_alarm(raised.mode, "auth", "", active=False, standing=True)
    assert cleared.mode.sync_alarms == frozenset()
    assert [e.kind for e in cleared.after if isinstance(e, m.Sign)] == ["sync-alarm-cleared"]
    assert dict(m.indicator_patterns(cleared.mode))[Indicator.STATUS_LED] is Pattern.ON


def test_a_one_off_sync_alarm_is_signed_and_pulses_without_standing() -> None:
    out = m.sync_alarm(m.Mode(state=State.READY), "receipt", "receipt signature does not verify",
                       active=True, standing=False)
    assert out.mode.sync_alarms == frozenset()
    assert [e.kind for e in out.after if isinstance(e, m.Sign)] == ["sync-alarm"]
    dark = m.sync_alarm(m.Mode(state=State.READY, stealth=True), "receipt", "x", active=True, standing=False)
    assert all(p is Pattern.OFF for _, p in next(e for e in dark.after if isinstance(e, m.Indicate)).patterns)
