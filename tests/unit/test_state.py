"""The recorder state machine: every (state, event) pair, persistence, and the resume decision."""

from __future__ import annotations

import itertools
import stat
from pathlib import Path

import pytest

from agent.state import (
    TRANSITIONS,
    Event,
    IllegalTransition,
    PersistedState,
    State,
    StateFile,
    events_from_off,
    resume_state,
    transition,
)

EXPECTED = {
    (State.OFF, Event.POWER_ON): State.READY,
    (State.READY, Event.RECORD): State.RECORDING,
    (State.RECORDING, Event.STOP): State.READY,
    (State.READY, Event.FAULT): State.ERROR,
    (State.RECORDING, Event.FAULT): State.ERROR,
    (State.ERROR, Event.RECOVER): State.READY,
    (State.OFF, Event.SHUTDOWN): State.OFF,
    (State.READY, Event.SHUTDOWN): State.OFF,
    (State.RECORDING, Event.SHUTDOWN): State.OFF,
    (State.ERROR, Event.SHUTDOWN): State.OFF,
}
ALL_PAIRS = list(itertools.product(State, Event))


def test_table_is_exactly_the_documented_one() -> None:
    assert TRANSITIONS == EXPECTED


@pytest.mark.parametrize(("state", "event"), ALL_PAIRS, ids=lambda v: v.name)
def test_every_pair(state: State, event: Event) -> None:
    if (state, event) in EXPECTED:
        assert transition(state, event) is EXPECTED[(state, event)]
    else:
        with pytest.raises(IllegalTransition) as info:
            transition(state, event)
        assert info.value.state is state and info.value.event is event
        assert state.name in str(info.value) and event.name in str(info.value)


def test_illegal_count() -> None:
    illegal = [p for p in ALL_PAIRS if p not in EXPECTED]
    assert len(illegal) == len(State) * len(Event) - len(EXPECTED) == 14


@pytest.mark.parametrize("target", list(State), ids=lambda s: s.name)
def test_events_from_off_reach_target_through_the_table(target: State) -> None:
    state = State.OFF
    for event in events_from_off(target):
        state = transition(state, event)
    assert state is target
    assert events_from_off(State.RECORDING) == (Event.POWER_ON, Event.RECORD)


# ---- persistence ------------------------------------------------------------------------

SAMPLE = PersistedState(State.RECORDING, 1_715_680_800_000_000_000, 42_000, "boot-a", "rec-1")


@pytest.mark.parametrize(
    "persisted",
    [SAMPLE, PersistedState(State.READY, 0, 0, "b", None), PersistedState(State.ERROR, -1, 2**62, "é", "r")],
)
def test_round_trip(tmp_path: Path, persisted: PersistedState) -> None:
    sf = StateFile(tmp_path / "state.json")
    sf.save(persisted)
    assert sf.load().persisted == persisted
    assert sf.load().problem == ""
    assert stat.S_IMODE((tmp_path / "state.json").stat().st_mode) == 0o600


def test_save_overwrites(tmp_path: Path) -> None:
    sf = StateFile(tmp_path / "state.json")
    sf.save(SAMPLE)
    later = PersistedState(State.READY, 2, 3, "boot-a")
    sf.save(later)
    assert sf.load().persisted == later


def test_missing_file_is_no_state_and_no_problem(tmp_path: Path) -> None:
    result = StateFile(tmp_path / "none.json").load()
    assert result.persisted is None and result.problem == ""


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"", "not JSON"),
        (b"{\"state\": \"recor", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"state": "recording"}', "missing keys"),
        (b'{"state": "flying", "since_utc_ns": 1, "since_mono_ns": 1, "boot_id": "b", "recording_id": null}',
         "unknown state"),
        (b'{"state": "ready", "since_utc_ns": "1", "since_mono_ns": 1, "boot_id": "b", "recording_id": null}',
         "since_utc_ns"),
        (b'{"state": "ready", "since_utc_ns": 1, "since_mono_ns": true, "boot_id": "b", "recording_id": null}',
         "since_mono_ns"),
        (b'{"state": "ready", "since_utc_ns": 1, "since_mono_ns": 1, "boot_id": 7, "recording_id": null}',
         "boot_id"),
        (b'{"state": "ready", "since_utc_ns": 1, "since_mono_ns": 1, "boot_id": "b", "recording_id": 5}',
         "recording_id"),
    ],
)
def test_corrupt_file_gives_safe_default_and_a_clear_problem(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes, why: str
) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(content)
    result = StateFile(path).load()
    assert result.persisted is None
    assert "corrupt" in result.problem and why in result.problem and str(path) in result.problem
    assert "corrupt" in caplog.text
    assert resume_state(result.persisted, "boot-a") == (State.READY, False)


def test_unreadable_file_gives_safe_default(tmp_path: Path) -> None:
    (tmp_path / "state.json").mkdir()  # reading a directory fails with an OSError
    result = StateFile(tmp_path / "state.json").load()
    assert result.persisted is None
    assert "Reading state file" in result.problem


def test_extra_keys_from_newer_firmware_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(SAMPLE.to_json()[:-1] + b', "zz_new": 1}')
    assert StateFile(path).load().persisted == SAMPLE


# ---- resume -------------------------------------------------------------------------------


def _p(state: State, boot: str = "boot-a", recording_id: str | None = None) -> PersistedState:
    return PersistedState(state, 1, 1, boot, recording_id)


@pytest.mark.parametrize(
    ("persisted", "now_boot", "expected"),
    [
        (None, "boot-a", (State.READY, False)),
        (_p(State.OFF), "boot-a", (State.READY, False)),
        (_p(State.OFF), "boot-b", (State.READY, False)),
        (_p(State.READY), "boot-b", (State.READY, False)),
        # Went down mid-incident: record again, whether the agent or the whole unit restarted.
        (_p(State.RECORDING, recording_id="r"), "boot-a", (State.RECORDING, True)),
        (_p(State.RECORDING, recording_id="r"), "boot-b", (State.RECORDING, True)),
        (_p(State.RECORDING), "boot-b", (State.RECORDING, True)),
        # Faulted while recording: the incident is not over, try to record again.
        (_p(State.ERROR, recording_id="r"), "boot-a", (State.RECORDING, True)),
        (_p(State.ERROR, recording_id="r"), "boot-b", (State.RECORDING, True)),
        # Faulted idle: kept across an agent restart, cleared by a reboot.
        (_p(State.ERROR), "boot-a", (State.ERROR, False)),
        (_p(State.ERROR), "boot-b", (State.READY, False)),
    ],
)
def test_resume_decision(persisted: PersistedState | None, now_boot: str, expected: tuple[State, bool]) -> None:
    assert resume_state(persisted, now_boot) == expected


def test_resume_target_is_reachable_from_off() -> None:
    for state in State:
        target, _ = resume_state(_p(state), "boot-a")
        current = State.OFF
        for event in events_from_off(target):
            current = transition(current, event)
        assert current is target
