"""The recorder state machine: one transition table, its persisted form, and the resume decision."""

from __future__ import annotations

import enum
import json
import logging
import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from agent.fsutil import StorageError, atomic_write_bytes

log = logging.getLogger(__name__)


class State(enum.Enum):
    OFF = "off"
    READY = "ready"  # drivers open, pre-event buffer filling
    RECORDING = "recording"
    ERROR = "error"


class Event(enum.Enum):
    POWER_ON = "power_on"
    RECORD = "record"
    STOP = "stop"
    FAULT = "fault"
    RECOVER = "recover"
    SHUTDOWN = "shutdown"


class IllegalTransition(Exception):
    """An event arrived in a state that has no transition for it."""

    def __init__(self, state: State, event: Event) -> None:
        super().__init__(f"no transition from {state.name} on {event.name}")
        self.state = state
        self.event = event


# All of the recorder's behaviour. SHUTDOWN is legal from OFF too, so shutting down twice
# (signal handler, then main loop) is harmless rather than an exception on the way out.
# FAULT: a recording has had no segment open for agent.recorder.mode.OPEN_FAULT_NS, or every
# media sensor has failed; RECOVER: the condition is gone (then RECORD if the recording goes on).
TRANSITIONS: dict[tuple[State, Event], State] = {
    (State.OFF, Event.POWER_ON): State.READY,
    (State.READY, Event.RECORD): State.RECORDING,
    (State.RECORDING, Event.STOP): State.READY,
    (State.READY, Event.FAULT): State.ERROR,
    (State.RECORDING, Event.FAULT): State.ERROR,
    (State.ERROR, Event.RECOVER): State.READY,
    **{(state, Event.SHUTDOWN): State.OFF for state in State},
}


def transition(state: State, event: Event) -> State:
    """The state after ``event`` in ``state``; raises :class:`IllegalTransition` if there is none."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransition(state, event) from None


def events_from_off(target: State) -> tuple[Event, ...]:
    """The shortest event sequence that takes a freshly started unit (OFF) to ``target``.

    Derived from :data:`TRANSITIONS`, so the shell replays it through :func:`transition`
    instead of hard-coding a path.
    """
    paths: dict[State, tuple[Event, ...]] = {State.OFF: ()}
    queue = deque([State.OFF])
    while queue:
        state = queue.popleft()
        for (src, event), dst in TRANSITIONS.items():
            if src is state and dst not in paths:
                paths[dst] = (*paths[state], event)
                queue.append(dst)
    return paths[target]


@dataclass(frozen=True, slots=True)
class PersistedState:
    """What survives a restart: the state, when it was entered, in which boot, for which recording.

    ``since_mono_ns`` only means something within ``boot_id``. ``recording_id`` is kept while
    a recording is interrupted by a fault, so the unit can pick the incident back up.
    """

    state: State
    since_utc_ns: int
    since_mono_ns: int
    boot_id: str
    recording_id: str | None = None

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "state": self.state.value,
                "since_utc_ns": self.since_utc_ns,
                "since_mono_ns": self.since_mono_ns,
                "boot_id": self.boot_id,
                "recording_id": self.recording_id,
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> PersistedState:
        """Parse and validate; raises ``ValueError`` saying what is wrong."""
        try:
            raw = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"not JSON: {e}") from None
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        # Extra keys are ignored so a file written by newer firmware survives a rollback.
        missing = {"state", "since_utc_ns", "since_mono_ns", "boot_id", "recording_id"} - set(raw)
        if missing:
            raise ValueError(f"missing keys {sorted(missing)}")
        try:
            state = State(raw["state"])
        except ValueError:
            raise ValueError(f"unknown state {raw['state']!r}") from None
        for key in ("since_utc_ns", "since_mono_ns"):
            if type(raw[key]) is not int:
                raise ValueError(f"{key} is not an integer")
        if not isinstance(raw["boot_id"], str):
            raise ValueError("boot_id is not a string")
        if raw["recording_id"] is not None and not isinstance(raw["recording_id"], str):
            raise ValueError("recording_id is neither null nor a string")
        return cls(state, raw["since_utc_ns"], raw["since_mono_ns"], raw["boot_id"], raw["recording_id"])


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What :meth:`StateFile.load` found: ``persisted`` is None when there was no usable file;
    ``problem`` says why a file that exists was ignored ("" when it was fine or absent)."""

    persisted: PersistedState | None
    problem: str = ""


class StateFile:
    """The persisted recorder state, written atomically (old or new, never torn).

    Not thread-safe: the recorder's state owner is the only writer.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def save(self, persisted: PersistedState) -> None:
        """Write atomically with mode 0600; raises :class:`StorageError` if the disk refuses."""
        atomic_write_bytes(self.path, persisted.to_json(), 0o600)

    def load(self) -> LoadResult:
        """Read the file back. Never raises: a missing, unreadable or corrupt file gives a
        result with ``persisted=None`` (the safe default: start READY, not recording)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return LoadResult(None)
        except OSError as e:
            problem = str(StorageError(e.errno, f"Reading state file: {e.strerror}", str(self.path)))
            log.error("%s; starting from the default state", problem)
            return LoadResult(None, problem)
        try:
            return LoadResult(PersistedState.from_json(data))
        except ValueError as e:
            problem = f"state file {self.path} is corrupt: {e}"
            log.error("%s; starting from the default state", problem)
            return LoadResult(None, problem)


def resume_state(persisted: PersistedState | None, now_boot_id: str) -> tuple[State, bool]:
    """Where to go after a (re)start, and whether that continues an interrupted recording.

    A unit that went down RECORDING, or faulted while recording, records again: a camera that
    reboots mid-incident must keep recording. A fault with no recording behind it is kept if
    only the agent restarted (same boot), so a crash loop cannot hide it; a reboot clears it.
    Anything else, including no or corrupt state, starts READY.
    """
    if persisted is None:
        return State.READY, False
    if persisted.state is State.RECORDING:
        return State.RECORDING, True
    if persisted.state is State.ERROR:
        if persisted.recording_id is not None:
            return State.RECORDING, True
        if persisted.boot_id == now_boot_id:
            return State.ERROR, False
    return State.READY, False
