"""Exponential backoff, the one rule behind every retry loop of the unit (sensors, console port, sync)."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff bounds: the wait starts at ``initial_s`` and doubles up to ``max_s``.

    Pure and immutable. Two ways to use it: by count of consecutive failures (:meth:`ceiling_s`,
    :meth:`delay_s` with full jitter, for many units sharing one server), or from the previous
    wait (:meth:`after`, for a loop that reopens a local device).
    """

    initial_s: float = 1.0
    max_s: float = 300.0

    def __post_init__(self) -> None:
        if not 0 < self.initial_s <= self.max_s:
            raise ValueError(f"backoff needs 0 < initial_s <= max_s, got {self.initial_s}, {self.max_s}")

    def ceiling_s(self, failures: int) -> float:
        """The largest wait after ``failures`` consecutive failures (1: ``initial_s``; 0: no wait)."""
        if failures <= 0:
            return 0.0
        # Capped exponent: 2**64 s is already far beyond any max_s, and never overflows a float.
        return min(self.max_s, self.initial_s * 2.0 ** min(failures - 1, 64))

    def delay_s(self, failures: int, rng: random.Random) -> float:
        """Full jitter (AWS architecture blog): uniform in [0, ceiling], so units that lost the
        network together do not come back together."""
        return self.jittered_s(failures, rng.random())

    def jittered_s(self, failures: int, jitter: float) -> float:
        """:meth:`delay_s` with the random draw given: ``jitter`` in [0, 1) scales the ceiling."""
        return self.ceiling_s(failures) * jitter

    def after(self, previous_s: float) -> float:
        """The wait that follows a wait of ``previous_s`` (0 for none yet): doubled, within bounds."""
        return min(self.max_s, max(self.initial_s, previous_s * 2))
