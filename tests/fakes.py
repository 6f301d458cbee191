"""Hand-written fakes for tests: a clock whose time moves only when told."""

from __future__ import annotations

import threading

from hal.clock import TimeQuality, TimeSource

DEFAULT_START_UTC_NS = 1_715_680_800 * 1_000_000_000  # 2024-05-14T10:00:00Z


class FakeClock:
    """A :class:`hal.clock.Clock` for tests: ``sleep`` advances time at once instead of waiting.

    UTC moves with monotonic time until ``set_utc_ns`` steps it, as an NTP step would.
    Thread-safe: every read and change happens under one lock.
    """

    def __init__(
        self,
        *,
        start_mono_ns: int = 1_000_000_000_000,
        start_utc_ns: int = DEFAULT_START_UTC_NS,
        quality: TimeQuality | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._mono_ns = start_mono_ns
        self._utc_offset_ns = start_utc_ns - start_mono_ns
        self._quality = quality or TimeQuality(TimeSource.NTP, synced=True, uncertainty_ns=1_000_000)
        self.sleeps: list[float] = []

    def monotonic_ns(self) -> int:
        with self._lock:
            return self._mono_ns

    def utc_ns(self) -> int:
        with self._lock:
            return self._mono_ns + self._utc_offset_ns

    def quality(self) -> TimeQuality:
        with self._lock:
            return self._quality

    def sleep(self, duration_s: float) -> None:
        """Advance time by ``duration_s`` at once (0 or negative: no change) and record the call."""
        with self._lock:
            self.sleeps.append(duration_s)
            if duration_s > 0:
                self._mono_ns += max(1, round(duration_s * 1e9))

    def advance(self, duration_s: float) -> None:
        """Let ``duration_s`` seconds pass, as if the test did something slow."""
        self.advance_ns(round(duration_s * 1e9))

    def advance_ns(self, duration_ns: int) -> None:
        if duration_ns < 0:
            raise ValueError("monotonic time cannot go backwards")
        with self._lock:
            self._mono_ns += duration_ns

    def set_utc_ns(self, utc_ns: int) -> None:
        """Step UTC to ``utc_ns`` without touching monotonic time."""
        with self._lock:
            self._utc_offset_ns = utc_ns - self._mono_ns

    def set_quality(self, quality: TimeQuality) -> None:
        with self._lock:
            self._quality = quality

    @property
    def slept_s(self) -> float:
        """Total seconds slept so far."""
        with self._lock:
            return sum(s for s in self.sleeps if s > 0)
