"""The clock protocol: monotonic time for ordering, UTC for labelling, and how good the UTC is."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol


class TimeSource(enum.Enum):
    GNSS = "gnss"
    NTP = "ntp"
    RTC = "rtc"
    UNSYNCED = "unsynced"


@dataclass(frozen=True, slots=True)
class TimeQuality:
    """Where the UTC time comes from and how far it may be off (None: unknown)."""

    source: TimeSource
    synced: bool
    uncertainty_ns: int | None = None


class Clock(Protocol):
    """Injected everywhere time is needed; the agent never calls ``time.time()`` itself.

    ``sleep`` with 0 or a negative duration returns at once. Implementations are thread-safe.
    """

    def monotonic_ns(self) -> int: ...

    def utc_ns(self) -> int: ...

    def quality(self) -> TimeQuality: ...

    def sleep(self, duration_s: float) -> None: ...
