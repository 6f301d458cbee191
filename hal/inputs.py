"""The physical inputs protocol: record and mark buttons, holster or signal contacts."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from hal.common import Device


class Control(enum.Enum):
    RECORD = "record"
    MARK = "mark"
    SIGNAL = "signal"  # holster draw, light bar, door: an automatic trigger
    STEALTH = "stealth"
    MUTE = "mute"


class Action(enum.Enum):
    PRESS = "press"
    LONG_PRESS = "long-press"
    RELEASE = "release"


@dataclass(frozen=True, slots=True)
class InputEvent:
    """A debounced input: the driver has already turned contact bounce into one event."""

    mono_ns: int
    control: Control
    action: Action


class Inputs(Device, Protocol):
    """``read(timeout_s)`` returns the next input event or None on timeout."""

    def read(self, timeout_s: float) -> InputEvent | None: ...
