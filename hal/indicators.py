"""The indicators protocol: LEDs, haptic motor, buzzer.

Stealth mode is the agent's decision (it simply sets everything OFF); drivers only obey.
"""

from __future__ import annotations

import enum
from typing import Protocol

from hal.common import Device


class Indicator(enum.Enum):
    RECORDING_LED = "recording-led"
    STATUS_LED = "status-led"
    HAPTIC = "haptic"
    BUZZER = "buzzer"


class Pattern(enum.Enum):
    OFF = "off"
    ON = "on"
    BLINK = "blink"
    PULSE = "pulse"  # one short burst (haptic or buzzer acknowledgement)


class Indicators(Device, Protocol):
    def set(self, indicator: Indicator, pattern: Pattern) -> None: ...

    def state(self) -> dict[Indicator, Pattern]: ...
