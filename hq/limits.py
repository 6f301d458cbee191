"""Bounds on what a client can make headquarters hold: connections in all and per source, and a
per-source rate for refused and unauthenticated requests. Pure decisions; the clock is injected.

Thread-safe (one lock each): the server's event loop takes connections, route handlers running in
worker threads take tokens.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_MAX_CONNECTIONS = 1024
DEFAULT_MAX_PER_SOURCE = 64
# A unit opens one connection at a time; a depot's NAT puts many units behind one address.
DEFAULT_REFUSALS_PER_S = 2.0
DEFAULT_REFUSAL_BURST = 30
MAX_TRACKED_SOURCES = 10_000


@dataclass(frozen=True, slots=True)
class LimitSettings:
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_per_source: int = DEFAULT_MAX_PER_SOURCE
    refusals_per_s: float = DEFAULT_REFUSALS_PER_S
    refusal_burst: int = DEFAULT_REFUSAL_BURST


class ConnectionLimits:
    """Counts open connections, in all and per source address; ``admit`` says whether one more may open."""

    def __init__(self, max_total: int, max_per_source: int) -> None:
        self.max_total = max_total
        self.max_per_source = max_per_source
        self._open: dict[str, int] = {}
        self._total = 0
        self.refused = 0
        self._lock = threading.Lock()

    def admit(self, source: str) -> str | None:
        """Count a new connection from ``source``; None if admitted, else why it is refused."""
        with self._lock:
            if self._total >= self.max_total:
                self.refused += 1
                return f"{self._total} connections open (the limit)"
            held = self._open.get(source, 0)
            if held >= self.max_per_source:
                self.refused += 1
                return f"{held} connections open from this source (the limit)"
            self._open[source] = held + 1
            self._total += 1
            return None

    def release(self, source: str) -> None:
        with self._lock:
            held = self._open.get(source, 0)
            if held <= 1:
                self._open.pop(source, None)
            else:
                self._open[source] = held - 1
            if held:
                self._total -= 1

    def open_from(self, source: str) -> int:
        with self._lock:
            return self._open.get(source, 0)

    @property
    def total(self) -> int:
        with self._lock:
            return self._total


class RateLimiter:
    """A token bucket per source: ``rate_per_s`` tokens a second up to ``burst``.

    ``take`` returns 0 when a token was taken, else the seconds until one is available (for a
    ``Retry-After``). At most ``max_sources`` buckets are kept; the least recently used goes first
    (a forgotten source starts with a full bucket, which only ever errs towards allowing).
    """

    def __init__(
        self, rate_per_s: float, burst: int, now_s: Callable[[], float], max_sources: int = MAX_TRACKED_SOURCES
    ) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("a rate limit needs a positive rate and a burst of at least 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._now_s = now_s
        self._max_sources = max_sources
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # source -> (tokens, at_s)
        self._lock = threading.Lock()

    def take(self, source: str) -> float:
        now = self._now_s()
        with self._lock:
            tokens, at = self._buckets.pop(source, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + max(0.0, now - at) * self.rate_per_s)
            wait = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait = (1.0 - tokens) / self.rate_per_s
            self._buckets[source] = (tokens, now)
            while len(self._buckets) > self._max_sources:
                self._buckets.popitem(last=False)
            return wait

    def limited(self, source: str) -> float:
        """Seconds until ``source`` has a token again, without taking one (0: it has one)."""
        now = self._now_s()
        with self._lock:
            tokens, at = self._buckets.get(source, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + max(0.0, now - at) * self.rate_per_s)
            return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate_per_s


def retry_after(wait_s: float) -> str:
    """A ``Retry-After`` value (whole seconds, at least 1) for a wait of ``wait_s``."""
    return str(max(1, math.ceil(wait_s)))
