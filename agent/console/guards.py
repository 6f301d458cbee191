"""Rate limits for one serial line: error answers and a flood of input. Pure: time from the caller."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TokenBucket:
    """At most ``burst`` events at once, refilled at ``per_s``. Pure: ``now_ns`` from the caller."""

    burst: float
    per_s: float
    tokens: float = -1.0
    last_ns: int | None = None

    def take(self, now_ns: int) -> bool:
        if self.last_ns is None or self.tokens < 0:
            self.tokens = self.burst
        else:
            self.tokens = min(self.burst, self.tokens + (now_ns - self.last_ns) / 1e9 * self.per_s)
        self.last_ns = now_ns
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@dataclass
class FloodGuard:
    """Decides which input is parsed, and when reading pauses, so a flood cannot eat the CPU the
    recorder needs. Up to ``parse_per_s`` bytes a second are parsed (a real line at its baud
    rate never sends more); beyond that the console is flooded: input is read and thrown away
    at up to ``discard_per_s``, and reading pauses when that is spent. The flood ends after
    ``quiet_ns`` without a byte. Pure."""

    parse_per_s: int
    discard_per_s: int = 1 << 20
    window_ns: int = 250_000_000
    quiet_ns: int = 500_000_000
    flooding: bool = False
    discarded: int = 0
    _window_start: int = 0
    _seen: int = 0
    _thrown: int = 0
    _last_byte_ns: int = 0

    def _roll(self, now_ns: int) -> None:
        if now_ns - self._window_start >= self.window_ns:
            self._window_start, self._seen, self._thrown = now_ns, 0, 0

    def admit(self, n: int, now_ns: int) -> bool:
        """True: parse these ``n`` bytes; False: throw them away."""
        self._roll(now_ns)
        self._last_byte_ns = now_ns
        self._seen += n
        if not self.flooding and self._seen > self.parse_per_s * self.window_ns // 1_000_000_000:
            self.flooding = True
        if self.flooding:
            self.discarded += n
            self._thrown += n
            return False
        return True

    def pause_s(self, now_ns: int) -> float:
        """How long to stop reading (0: read on)."""
        self._roll(now_ns)
        if self.flooding and self._thrown >= self.discard_per_s * self.window_ns // 1_000_000_000:
            return max(0.0, (self._window_start + self.window_ns - now_ns) / 1e9)
        return 0.0

    def ended(self, now_ns: int) -> int | None:
        """Bytes thrown away, once, when a flood is over; None otherwise."""
        if self.flooding and now_ns - self._last_byte_ns >= self.quiet_ns:
            n, self.discarded, self.flooding = self.discarded, 0, False
            return n
        return None
