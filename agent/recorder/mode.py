"""The unit's mode as a pure state machine: recording state, storage level, stealth and mute.

Every handler takes the current :class:`Mode` and returns an :class:`Outcome`: the next mode and
the effects the recorder thread must carry out (events to sign, indicator patterns, segment
work). Nothing here touches the chain, a file or a device, so every transition is tested
without I/O. The recording state itself moves only through :func:`agent.state.transition`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from agent.state import Event, State, transition
from agent.storage import StorageLevel
from hal.indicators import Indicator, Pattern

OPEN_FAULT_NS = 10_000_000_000  # recording with no segment open this long: the unit is in ERROR


class CommandError(Exception):
    """A command that cannot be done now (stop while not recording...), with the reason."""


# What each storage level lets the recorder do (the storage maintainer decides the level).
BUFFERING_LEVELS = frozenset({StorageLevel.OK, StorageLevel.LOW})  # the pre-event buffer fills
REFUSING_LEVELS = frozenset({StorageLevel.FULL, StorageLevel.EXHAUSTED})  # new recordings refused
NO_PRE_EVENT_LEVELS = frozenset({StorageLevel.CRITICAL, StorageLevel.FULL, StorageLevel.EXHAUSTED})


@dataclass(frozen=True, slots=True)
class Mode:
    """Everything that decides what the recorder does with the next packet or command.

    ``state`` is derived (see :func:`settle`): ERROR while a fault condition holds, else
    RECORDING while ``recording_id`` is set, else READY. A recording interrupted by a fault
    keeps its id in ERROR, so a restart resumes it (:func:`agent.state.resume_state`).
    """

    state: State = State.OFF
    recording_id: str | None = None
    storage: StorageLevel = StorageLevel.OK
    stealth: bool = False
    muted: bool = False
    open_fault: bool = False  # recording, and no segment could be opened for OPEN_FAULT_NS
    media_sensors: frozenset[str] = frozenset()
    failed_sensors: frozenset[str] = frozenset()
    sync_alarms: frozenset[str] = frozenset()  # standing sync alarms (agent/sync/alarms.py) raised now
    live: bool = False  # a live stream is open: someone at headquarters may be watching
    live_notice: str = "both"  # how the wearer is told (config live.notice): light, haptic, both, none

    @property
    def recording(self) -> bool:
        return self.recording_id is not None

    @property
    def media_lost(self) -> bool:
        """Every media sensor has failed and none has delivered since."""
        return bool(self.media_sensors) and self.media_sensors <= self.failed_sensors

    @property
    def faulted(self) -> bool:
        return self.open_fault or self.media_lost

    @property
    def buffering(self) -> bool:
        return self.storage in BUFFERING_LEVELS


# -- effects: what the recorder thread does after (or before) a change of mode -------------------


@dataclass(frozen=True, slots=True)
class Sign:
    """Sign one chain event. A ``required`` one that fails fails the command; others are logged."""

    kind: str
    detail: dict[str, Any]
    recording_id: str | None
    required: bool = True


@dataclass(frozen=True, slots=True)
class Indicate:
    patterns: tuple[tuple[Indicator, Pattern], ...]


@dataclass(frozen=True, slots=True)
class Persist:
    """Save the state file."""


@dataclass(frozen=True, slots=True)
class BeginRecording:
    """Drain the pre-event buffer into the first segment of ``recording_id``."""

    recording_id: str
    trigger: str


@dataclass(frozen=True, slots=True)
class FinishRecording:
    """Flush held packets, seal the open segments."""


@dataclass(frozen=True, slots=True)
class DropPreEvent:
    reason: str


@dataclass(frozen=True, slots=True)
class DropAudio:
    """Forget buffered audio (mute)."""


@dataclass(frozen=True, slots=True)
class FlagSegments:
    flag: str


Effect = Sign | Indicate | Persist | BeginRecording | FinishRecording | DropPreEvent | DropAudio | FlagSegments


@dataclass(frozen=True, slots=True)
class Outcome:
    """The next mode; ``before`` runs before it takes effect (a failure there changes nothing),
    ``after`` once it has, in order."""

    mode: Mode
    after: tuple[Effect, ...] = ()
    before: tuple[Effect, ...] = ()
    answer: dict[str, Any] = field(default_factory=dict)


# -- pure helpers ----------------------------------------------------------------------------------


def indicator_patterns(mode: Mode, pulse: bool = False) -> tuple[tuple[Indicator, Pattern], ...]:
    """What the LEDs, buzzer and haptic show in ``mode`` (everything dark in stealth)."""
    if mode.stealth:
        return tuple((i, Pattern.OFF) for i in Indicator)
    alarm = mode.state is State.ERROR or mode.storage is not StorageLevel.OK or bool(mode.sync_alarms)
    watched = mode.live and mode.live_notice in ("light", "both")
    out = [
        # blinking while watched is the wearer's "someone is watching" (Axon's Watch Me), recording or not
        (Indicator.RECORDING_LED, Pattern.BLINK if watched else Pattern.ON if mode.recording else Pattern.OFF),
        (Indicator.STATUS_LED, Pattern.BLINK if alarm else Pattern.ON),
    ]
    if pulse and mode.storage in REFUSING_LEVELS:
        out.append((Indicator.BUZZER, Pattern.PULSE))
    if pulse:
        out.append((Indicator.HAPTIC, Pattern.PULSE))
    return tuple(out)


def fault_reason(mode: Mode) -> str:
    """Why ``mode`` is in ERROR, in words for the log ("" when it is not faulted)."""
    if mode.open_fault:
        return f"no segment could be opened for {OPEN_FAULT_NS / 1e9:.0f} s"
    if mode.media_lost:
        return f"every media sensor failed: {', '.join(sorted(mode.failed_sensors))}"
    return ""


def settle(mode: Mode) -> Mode:
    """The mode with ``state`` brought in line with the recording and the fault conditions,
    moving only along the transition table (ERROR -> READY -> RECORDING on recovery)."""
    state = mode.state
    if state is State.OFF:
        return mode
    target = State.ERROR if mode.faulted else State.RECORDING if mode.recording else State.READY
    if state is not target and target is State.ERROR:
        state = transition(state, Event.FAULT)
    if state is State.ERROR and target is not State.ERROR:
        state = transition(state, Event.RECOVER)
    if state is State.READY and target is State.RECORDING:
        state = transition(state, Event.RECORD)
    if state is State.RECORDING and target is State.READY:
        state = transition(state, Event.STOP)
    return dataclasses.replace(mode, state=state)


def _changed(old: Mode, new: Mode, *effects: Effect, pulse: bool = False) -> tuple[Effect, ...]:
    """``effects``, after saving and showing the state when it moved (a sign that fails then
    fails the command, never the record of the state)."""
    if new.state is not old.state:
        return (Persist(), Indicate(indicator_patterns(new, pulse)), *effects)
    return effects


# -- handlers: one per thing that can happen to the mode ---------------------------------------


def power_on(mode: Mode) -> Outcome:
    new = settle(dataclasses.replace(mode, state=transition(mode.state, Event.POWER_ON)))
    return Outcome(new, (Persist(), Indicate(indicator_patterns(new))))


def shutdown(mode: Mode) -> Outcome:
    """Seal what is open (the stop is signed if the chain can take it), then OFF."""
    effects: tuple[Effect, ...] = ()
    if mode.recording:
        # the state file still says RECORDING only if we never get here: a crash resumes recording
        effects = _stop_effects(mode, "shutdown")
    new = dataclasses.replace(mode, state=transition(mode.state, Event.SHUTDOWN), recording_id=None, open_fault=False)
    return Outcome(new, (*effects, Persist(), Indicate(indicator_patterns(new))))


def start(mode: Mode, actor: str, trigger: str, recording_id: str) -> Outcome:
    if mode.recording:
        raise CommandError("already recording")
    if mode.storage in REFUSING_LEVELS:
        raise CommandError(
            f"storage {mode.storage.value}: new recordings are refused until headquarters acknowledges "
            "footage and space is freed (nothing unacknowledged is ever overwritten)"
        )
    new = settle(dataclasses.replace(mode, recording_id=recording_id))
    # signed first: a start that cannot be recorded in the chain is refused, mode unchanged
    sign = Sign("record-start", {"trigger": trigger, "by": actor}, recording_id)
    after = (BeginRecording(recording_id, trigger), Persist(), Indicate(indicator_patterns(new, pulse=True)))
    return Outcome(new, after, before=(sign,))


def _stop_effects(mode: Mode, by: str) -> tuple[Effect, ...]:
    # the mode leaves the recording even when ``record-stop`` cannot be signed (the disk is full
    # and the reserve spent): a stop never fails half-way; the chain's next event explains the gap
    return FinishRecording(), Sign("record-stop", {"by": by}, mode.recording_id, required=False)


def stop(mode: Mode, actor: str) -> Outcome:
    if not mode.recording:
        raise CommandError("not recording")
    new = settle(dataclasses.replace(mode, recording_id=None, open_fault=False))
    after = (*_stop_effects(mode, actor), Persist(), Indicate(indicator_patterns(new, pulse=True)))
    return Outcome(new, after, answer={"recording_id": mode.recording_id})


def set_stealth(mode: Mode, actor: str, on: bool) -> Outcome:
    if on == mode.stealth:
        return Outcome(mode, answer={"stealth": on, "changed": False})
    new = dataclasses.replace(mode, stealth=on)
    effects: list[Effect] = [Sign("stealth-on" if on else "stealth-off", {"by": actor}, mode.recording_id)]
    if on:
        effects.append(FlagSegments("stealth"))
    effects.append(Indicate(indicator_patterns(new)))
    return Outcome(new, tuple(effects), answer={"stealth": on, "changed": True})


def set_mute(mode: Mode, actor: str, on: bool) -> Outcome:
    if on == mode.muted:
        return Outcome(mode, answer={"muted": on, "changed": False})
    new = dataclasses.replace(mode, muted=on)
    effects: tuple[Effect, ...] = (Sign("mute-on" if on else "mute-off", {"by": actor}, mode.recording_id),)
    if on:
        effects = (*effects, DropAudio(), FlagSegments("muted"))
    return Outcome(new, effects, answer={"muted": on, "changed": True})


def storage_level(mode: Mode, level: StorageLevel, free_bytes: int) -> Outcome:
    """React to the storage maintainer: warn, give up the pre-event buffer, refuse, stop.

    Never deletes anything: only the maintainer's retention frees space, and only what
    headquarters acknowledged. The event is signed after the change: a level the chain cannot
    record still protects the disk (the failure is logged).
    """
    old = mode.storage
    if level is old:
        return Outcome(mode, answer={"level": level.value, "changed": False})
    new = dataclasses.replace(mode, storage=level)
    detail = {"level": level.value, "previous": old.value, "free_bytes": free_bytes}
    kind = {
        StorageLevel.FULL: "storage-full",
        StorageLevel.EXHAUSTED: "storage-full",
        StorageLevel.LOW: "storage-low",
        StorageLevel.CRITICAL: "storage-low",
    }.get(level, "storage-ok")
    effects: list[Effect] = [Sign(kind, detail, mode.recording_id, required=False)]
    if level in NO_PRE_EVENT_LEVELS:
        effects.append(DropPreEvent(f"storage {level.value}: pre-event buffer given up ({free_bytes} bytes free)"))
    if level is StorageLevel.EXHAUSTED and mode.recording:
        # stop now, so the last segment seals cleanly in the reserved space
        effects.extend(_stop_effects(mode, "storage"))
        new = settle(dataclasses.replace(new, recording_id=None, open_fault=False))
        effects.append(Persist())
    effects.append(Indicate(indicator_patterns(new, pulse=level in REFUSING_LEVELS)))
    return Outcome(new, tuple(effects), answer={"level": level.value, "changed": True})


def sensor_fault(mode: Mode, sensor: str, error: str) -> Outcome:
    new = settle(dataclasses.replace(mode, failed_sensors=mode.failed_sensors | {sensor}))
    sign = Sign("sensor-fault", {"sensor": sensor, "error": error[:200]}, mode.recording_id)
    return Outcome(new, _changed(mode, new, sign), answer={"sensor": sensor})


def sensor_recovered(mode: Mode, sensor: str, signed: bool = True) -> Outcome:
    """``sensor`` works again: said by its worker (signed), or seen by its packets (not signed)."""
    new = settle(dataclasses.replace(mode, failed_sensors=mode.failed_sensors - {sensor}))
    sign = (Sign("sensor-recovered", {"sensor": sensor}, mode.recording_id),) if signed else ()
    return Outcome(new, _changed(mode, new, *sign), answer={"sensor": sensor})


def open_fault(mode: Mode, faulted: bool) -> Outcome:
    """Whether the recording has gone without a segment for :data:`OPEN_FAULT_NS`."""
    new = settle(dataclasses.replace(mode, open_fault=faulted and mode.recording))
    return Outcome(new, _changed(mode, new))


def sync_alarm(mode: Mode, kind: str, message: str, active: bool, standing: bool) -> Outcome:
    """The sync worker raised (or cleared) an alarm: a signed ``sync-alarm`` (``sync-alarm-cleared``)
    event, the status LED blinking while a standing one holds, and a haptic pulse for a new one.

    A standing alarm raised again while it holds, or cleared while it does not, changes nothing.
    """
    held = kind in mode.sync_alarms
    if standing and active == held:
        return Outcome(mode, answer={"sync_alarms": sorted(mode.sync_alarms)})
    alarms = (mode.sync_alarms | {kind} if active else mode.sync_alarms - {kind}) if standing else mode.sync_alarms
    new = dataclasses.replace(mode, sync_alarms=alarms)
    detail = {"kind": kind, "message": message, "standing": standing}
    sign = Sign("sync-alarm" if active else "sync-alarm-cleared", detail, mode.recording_id, required=False)
    return Outcome(new, after=(sign, Indicate(indicator_patterns(new, pulse=active))),
                   answer={"sync_alarms": sorted(alarms)})


def live_changed(mode: Mode, on: bool, detail: dict[str, Any], notice: str) -> Outcome:
    """A live stream opened (``on``) or closed: a signed ``live-start``/``live-stop`` event with
    ``detail`` (operator's pseudonymous id, viewers, reason), the watched pattern on the lights and
    a haptic pulse as ``notice`` says. Stealth darkens both; the event is signed all the same."""
    new = dataclasses.replace(mode, live=on, live_notice=notice)
    sign = Sign("live-start" if on else "live-stop", detail, mode.recording_id, required=False)
    pulse = notice in ("haptic", "both")
    return Outcome(new, (sign, Indicate(indicator_patterns(new, pulse=pulse))), answer={"live": on})
