"""The sync worker's phases as one pure transition function (Mender's state machine, in small).

The worker's state that outlives one request is :class:`SyncState`: the phase, the count of
consecutive failures, when the next attempt is due and whether headquarters refuses the unit.
Everything that moves it is an event below; :func:`transition` returns the next state and the
effects the shell must carry out (audit, alarm), and raises :class:`IllegalTransition` for an
event the phase does not allow. No I/O, no clock: ``now_ns`` comes in.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from agent.backoff import Backoff
from agent.sync.policy import NS_PER_S


class Phase(enum.Enum):
    """What the worker is doing; the value is the ``state`` of its status."""

    STARTING = "starting"  # built, no pass finished yet
    IDLE = "idle"  # the last pass sent everything it could
    UPLOADING = "uploading"  # bytes of an entry are going out
    BACKOFF = "backoff"  # a pass failed; the next one waits until ``retry_at_ns``
    REFUSED = "refused"  # headquarters refuses the unit (401/403); only a heartbeat probes it
    STOPPED = "stopped"  # asked to stop; an upload in flight resumes at the next start


class Effect(enum.Enum):
    """What the shell must do besides recording the new state."""

    ALARM_AUTH = "alarm-auth"  # the first refusal: audit it and alarm (uploads stop)
    AUTH_RESTORED = "auth-restored"  # audit it and clear the standing "auth" alarm
    ALARM_CONFIG = "alarm-config"  # the first failure of a run of configuration errors
    CONFIG_RESOLVED = "config-resolved"  # a pass succeeded after a configuration alarm


@dataclass(frozen=True, slots=True)
class SyncState:
    phase: Phase = Phase.STARTING
    failures: int = 0  # consecutive failed passes (refusals not counted)
    retry_at_ns: int | None = None  # monotonic; no pass before it
    auth_refused: bool = False
    config_alarm: bool = False  # a configuration alarm stands since the last good pass

    def waiting(self, now_ns: int) -> bool:
        """True while a backoff or a refusal keeps the next pass from starting."""
        return self.retry_at_ns is not None and now_ns < self.retry_at_ns


# ---- events ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetryDue:
    """A pass starts: the wait it was held to is over."""


@dataclass(frozen=True, slots=True)
class Progress:
    """Headquarters confirmed bytes of an entry (or an entry's upload started)."""


@dataclass(frozen=True, slots=True)
class PassDone:
    """A pass ended without error: everything that could go out went out."""


@dataclass(frozen=True, slots=True)
class Failed:
    """A pass failed outside any one entry (network, 5xx, protocol, configuration).

    ``jitter`` in [0, 1) is the random draw that spreads the wait (full jitter); ``config`` when
    the unit's settings are at fault (an alarm on the first of a run)."""

    backoff: Backoff
    jitter: float
    config: bool = False


@dataclass(frozen=True, slots=True)
class AuthRefused:
    """401/403: uploads stop; a heartbeat probes again after ``retry_s``."""

    retry_s: float


@dataclass(frozen=True, slots=True)
class AuthRestored:
    """The probe went through: headquarters accepts the unit again."""


@dataclass(frozen=True, slots=True)
class Stop:
    """The worker was asked to stop."""


Event = RetryDue | Progress | PassDone | Failed | AuthRefused | AuthRestored | Stop


class IllegalTransition(Exception):
    """An event the current state does not allow (a bug in the shell, never a network condition)."""


# Which events each phase takes. Stop is taken everywhere (idempotent); nothing leaves STOPPED.
_ANY_RUNNING = frozenset({RetryDue, Progress, PassDone, Failed, AuthRefused, AuthRestored, Stop})
LEGAL: dict[Phase, frozenset[type]] = {
    Phase.STARTING: _ANY_RUNNING,
    Phase.IDLE: _ANY_RUNNING,
    Phase.UPLOADING: _ANY_RUNNING,
    Phase.BACKOFF: _ANY_RUNNING,
    Phase.REFUSED: _ANY_RUNNING,
    Phase.STOPPED: frozenset({Stop}),
}


def transition(state: SyncState, event: Event, now_ns: int) -> tuple[SyncState, tuple[Effect, ...]]:
    """The state after ``event`` at monotonic ``now_ns``, and the effects to carry out."""
    if type(event) not in LEGAL[state.phase]:
        raise IllegalTransition(f"{type(event).__name__} in phase {state.phase.value}")
    match event:
        case RetryDue():
            return replace(state, retry_at_ns=None), ()
        case Progress():
            if state.auth_refused:
                raise IllegalTransition("Progress while headquarters refuses the unit")
            return replace(state, phase=Phase.UPLOADING), ()
        case PassDone():
            if state.auth_refused:
                raise IllegalTransition("PassDone while headquarters refuses the unit")
            resolved = (Effect.CONFIG_RESOLVED,) if state.config_alarm else ()
            return replace(state, phase=Phase.IDLE, failures=0, config_alarm=False), resolved
        case Failed(backoff=backoff, jitter=jitter, config=config):
            failures = state.failures + 1
            delay_ns = round(backoff.jittered_s(failures, jitter) * NS_PER_S)
            alarm = config and failures == 1
            return (replace(state, phase=Phase.BACKOFF, failures=failures, retry_at_ns=now_ns + delay_ns,
                            config_alarm=state.config_alarm or alarm),
                    (Effect.ALARM_CONFIG,) if alarm else ())
        case AuthRefused(retry_s=retry_s):
            effects = () if state.auth_refused else (Effect.ALARM_AUTH,)
            return (replace(state, phase=Phase.REFUSED, auth_refused=True,
                            retry_at_ns=now_ns + round(retry_s * NS_PER_S)), effects)
        case AuthRestored():
            if not state.auth_refused:
                raise IllegalTransition("AuthRestored while headquarters accepts the unit")
            return replace(state, auth_refused=False), (Effect.AUTH_RESTORED,)
        case Stop():
            return replace(state, phase=Phase.STOPPED), ()
    raise IllegalTransition(f"unknown event {event!r}")
