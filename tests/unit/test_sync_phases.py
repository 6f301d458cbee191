"""The sync worker's phase machine: every transition of the table, pure (no I/O, no clock)."""

from __future__ import annotations

import pytest

from agent.backoff import Backoff
from agent.sync.alarms import event_detail, recorder_hooks
from agent.sync.phases import (
    LEGAL,
    AuthRefused,
    AuthRestored,
    Effect,
    Event,
    Failed,
    IllegalTransition,
    PassDone,
    Phase,
    Progress,
    RetryDue,
    Stop,
    SyncState,
    transition,
)

S = 1_000_000_000
BACKOFF = Backoff(1.0, 8.0)
ALL_EVENTS: list[Event] = [RetryDue(), Progress(), PassDone(), Failed(BACKOFF, 0.5), AuthRefused(900.0),
                           AuthRestored(), Stop()]


def test_failures_back_off_within_the_ceiling_and_a_good_pass_resets_them() -> None:
    state = SyncState()
    for n, ceiling in enumerate([1.0, 2.0, 4.0, 8.0, 8.0], start=1):
        state, effects = transition(state, Failed(BACKOFF, 0.5), 100 * S)
        assert (state.phase, state.failures, effects) == (Phase.BACKOFF, n, ())
        assert state.retry_at_ns == 100 * S + round(ceiling * 0.5 * S)
        assert state.waiting(100 * S) and not state.waiting(state.retry_at_ns)
    state, _ = transition(state, RetryDue(), 200 * S)
    assert state.retry_at_ns is None and state.phase is Phase.BACKOFF
    state, effects = transition(state, PassDone(), 201 * S)
    assert (state.phase, state.failures, effects) == (Phase.IDLE, 0, ())


def test_progress_moves_to_uploading() -> None:
    state, effects = transition(SyncState(phase=Phase.IDLE), Progress(), 0)
    assert state.phase is Phase.UPLOADING and effects == ()


def test_a_configuration_alarm_is_raised_once_per_run_and_resolved_by_a_good_pass() -> None:
    state, effects = transition(SyncState(), Failed(BACKOFF, 0.0, config=True), 0)
    assert effects == (Effect.ALARM_CONFIG,) and state.config_alarm and state.retry_at_ns == 0
    state, effects = transition(state, Failed(BACKOFF, 0.0, config=True), 0)
    assert effects == ()
    state, effects = transition(state, PassDone(), 0)
    assert effects == (Effect.CONFIG_RESOLVED,) and not state.config_alarm
    _, effects = transition(state, PassDone(), 0)
    assert effects == ()


def test_a_refusal_alarms_once_stops_uploads_and_is_probed_later() -> None:
    state, effects = transition(SyncState(phase=Phase.UPLOADING, failures=2), AuthRefused(900.0), 10 * S)
    assert effects == (Effect.ALARM_AUTH,)
    assert (state.phase, state.auth_refused, state.retry_at_ns, state.failures) == (Phase.REFUSED, True, 910 * S, 2)
    state, effects = transition(state, AuthRefused(900.0), 910 * S)
    assert effects == () and state.retry_at_ns == 1810 * S
    for event in (Progress(), PassDone()):  # nothing goes out while refused
        with pytest.raises(IllegalTransition):
            transition(state, event, 0)
    state, effects = transition(state, AuthRestored(), 1810 * S)
    assert effects == (Effect.AUTH_RESTORED,) and not state.auth_refused
    state, _ = transition(state, PassDone(), 1810 * S)
    assert state.phase is Phase.IDLE


def test_restoring_an_accepted_unit_is_a_bug() -> None:
    with pytest.raises(IllegalTransition, match="AuthRestored"):
        transition(SyncState(), AuthRestored(), 0)


@pytest.mark.parametrize("event", ALL_EVENTS, ids=lambda e: type(e).__name__)
def test_stopped_takes_only_stop(event: Event) -> None:
    stopped, _ = transition(SyncState(phase=Phase.IDLE), Stop(), 0)
    assert stopped.phase is Phase.STOPPED
    if isinstance(event, Stop):
        assert transition(stopped, event, 0)[0] == stopped
    else:
        with pytest.raises(IllegalTransition, match="stopped"):
            transition(stopped, event, 0)


@pytest.mark.parametrize("phase", [p for p in Phase if p is not Phase.STOPPED])
def test_every_running_phase_takes_every_event(phase: Phase) -> None:
    assert LEGAL[phase] == frozenset(type(e) for e in ALL_EVENTS)
    for event in ALL_EVENTS:
        if isinstance(event, AuthRestored):
            state, _ = transition(SyncState(phase=phase, auth_refused=True), event, 0)
        else:
            state, _ = transition(SyncState(phase=phase), event, 0)
        expected = {RetryDue: phase, AuthRestored: phase, Progress: Phase.UPLOADING, PassDone: Phase.IDLE,
                    Failed: Phase.BACKOFF, AuthRefused: Phase.REFUSED, Stop: Phase.STOPPED}[type(event)]
        assert state.phase is expected


def test_jittered_delay_is_the_draw_of_delay_s() -> None:
    import random
    a, b = random.Random(3), random.Random(3)
    for failures in range(6):
        assert BACKOFF.delay_s(failures, a) == BACKOFF.jittered_s(failures, b.random())


def test_reopen_backoff_doubles_from_the_previous_wait() -> None:
    waits = [0.0]
    for _ in range(6):
        waits.append(BACKOFF.after(waits[-1]))
    assert waits == [0.0, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_recorder_hooks_queue_a_signed_event_command_without_blocking() -> None:
    posted: list[tuple[str, str, dict[str, object]]] = []
    raised, cleared = recorder_hooks(lambda name, actor, **args: posted.append((name, actor, args)))
    raised("quarantined", "x" * 500)
    cleared("auth")
    assert posted[0][:2] == ("sync_alarm", "sync")
    assert posted[0][2] == {"kind": "quarantined", "message": "x" * 200, "active": True, "standing": False}
    assert posted[1][2] == event_detail("auth", "", active=False) == {"kind": "auth", "message": "", "active": False,
                                                                      "standing": True}
