"""Time: detecting clock steps against the monotonic clock, and the offset to GNSS time. Pure."""

from __future__ import annotations

from dataclasses import dataclass

STEP_THRESHOLD_NS = 500_000_000  # NTP slews below this; a larger change of offset is a step


@dataclass
class ClockStepDetector:
    """Watches ``utc - monotonic``: constant while the clock runs or slews, a jump when it is stepped.

    Sequence numbers and monotonic time order the chain, never UTC, so a step only needs to be
    recorded (as a signed event), not corrected.
    """

    threshold_ns: int = STEP_THRESHOLD_NS
    _offset_ns: int | None = None

    def observe(self, mono_ns: int, utc_ns: int) -> int | None:
        """The step in nanoseconds (positive: forward) if one happened since the last call."""
        offset = utc_ns - mono_ns
        previous, self._offset_ns = self._offset_ns, offset
        if previous is None:
            return None
        step = offset - previous
        return step if abs(step) >= self.threshold_ns else None


def gnss_offset_ns(fix_utc_ns: int, fix_mono_ns: int, clock_utc_ns: int, clock_mono_ns: int) -> int:
    """How far the unit's UTC is ahead of GNSS time (negative: behind), at the fix's instant."""
    unit_utc_at_fix = clock_utc_ns - (clock_mono_ns - fix_mono_ns)
    return unit_utc_at_fix - fix_utc_ns
