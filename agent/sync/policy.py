"""Pure sync decisions: which entry next, how long to back off, how fast to send.

Everything here takes ``now`` (monotonic ns) and a random source as arguments and touches no
file, socket or clock, so the rules are tested without I/O (see docs/sync-protocol.md,
"Errors and backoff").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Protocol, TypeVar

from agent.backoff import Backoff

__all__ = ["Backoff", "NS_PER_S", "MAX_CHUNK_BYTES", "Pending", "TokenBucket", "bucket_for", "capped_send_s",
           "choose_next", "ingest_polls", "next_chunk", "should_preempt", "upload_key", "upload_order"]

NS_PER_S = 1_000_000_000
MAX_CHUNK_BYTES = 4 * 1024 * 1024  # docs/sync-protocol.md: chunks are at most 4 MiB


def ingest_polls(total_s: float, first_s: float = 2.0, max_s: float = 30.0) -> list[float]:
    """The waits before each HEAD asking whether headquarters has finished ingesting an upload
    (docs/sync-protocol.md 1.2): doubling from ``first_s`` up to ``max_s`` each, ``total_s`` in
    all (the last wait is cut to fit); empty when ``total_s`` is not positive."""
    waits: list[float] = []
    left, step = total_s, first_s
    while left > 0:
        waits.append(min(step, left))
        left -= waits[-1]
        step = min(step * 2, max_s)
    return waits


class Pending(Protocol):
    """What ordering needs of an entry (``agent.store.Segment`` has it)."""

    @property
    def seq(self) -> int: ...

    @property
    def priority(self) -> int: ...

    @property
    def marks(self) -> int: ...


P = TypeVar("P", bound=Pending)


def upload_key(entry: Pending) -> tuple[int, int, int]:
    """Sort key: higher priority first, then entries with marks, then the oldest (lowest seq)."""
    return (-entry.priority, 0 if entry.marks > 0 else 1, entry.seq)


def upload_order(entries: Iterable[P]) -> list[P]:
    """Entries in the order to upload them: marked and flagged (priority) first, then oldest first."""
    return sorted(entries, key=upload_key)


def choose_next(entries: Iterable[P], not_before_ns: Mapping[int, int], now_ns: int) -> P | None:
    """The first entry in :func:`upload_order` that is not deferred past ``now_ns``, or None.

    ``not_before_ns`` maps a seq to the monotonic time before which it must not be retried
    (an entry whose file is unreadable, or that headquarters refused with a conflict), so one
    bad entry never blocks the rest of the backlog.
    """
    for entry in upload_order(entries):
        if not_before_ns.get(entry.seq, 0) <= now_ns:
            return entry
    return None


def should_preempt(current: Pending, candidates: Iterable[Pending]) -> bool:
    """True when a waiting entry outranks the one being uploaded by priority (checked between
    chunks; the current upload keeps its place at headquarters and resumes later)."""
    return any(c.seq != current.seq and c.priority > current.priority for c in candidates)


# ---- bandwidth cap --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenBucket:
    """A bandwidth cap as a token bucket, in bytes. ``rate_bytes_per_s`` 0 means no cap.

    Tokens may go negative: a send of ``n`` bytes takes them at once (a debt) and the caller
    waits until the debt is repaid, so a slice bigger than the burst still goes out, just later.
    Immutable: every operation returns a new bucket.
    """

    rate_bytes_per_s: float
    burst_bytes: float
    tokens: float
    updated_ns: int

    @classmethod
    def full(cls, rate_bytes_per_s: float, burst_bytes: float, now_ns: int) -> TokenBucket:
        if rate_bytes_per_s < 0 or burst_bytes < 0:
            raise ValueError("rate and burst must not be negative")
        return cls(rate_bytes_per_s, burst_bytes, burst_bytes, now_ns)

    @property
    def unlimited(self) -> bool:
        return self.rate_bytes_per_s == 0

    def refill(self, now_ns: int) -> TokenBucket:
        """Tokens earned since ``updated_ns`` (never above the burst; time going back earns none)."""
        if self.unlimited:
            return replace(self, updated_ns=now_ns)
        elapsed_ns = max(0, now_ns - self.updated_ns)
        tokens = min(self.burst_bytes, self.tokens + self.rate_bytes_per_s * elapsed_ns / NS_PER_S)
        return replace(self, tokens=tokens, updated_ns=max(now_ns, self.updated_ns))

    def take(self, n_bytes: int, now_ns: int) -> tuple[TokenBucket, float]:
        """Spend ``n_bytes``; return the new bucket and how many seconds to wait before sending
        them (0 when the tokens were there, or with no cap)."""
        bucket = self.refill(now_ns)
        if bucket.unlimited:
            return bucket, 0.0
        bucket = replace(bucket, tokens=bucket.tokens - n_bytes)
        wait_s = 0.0 if bucket.tokens >= 0 else -bucket.tokens / bucket.rate_bytes_per_s
        return bucket, wait_s


def capped_send_s(n_bytes: int, bandwidth_bps: int, debt_bytes: int = 64 * 1024) -> float:
    """How long a cap of ``bandwidth_bps`` (0: none) may hold back a body of ``n_bytes``, counting
    a debt of up to ``debt_bytes`` left by the previous send: what a request's deadline must allow
    on top of the network's own time."""
    if bandwidth_bps <= 0 or n_bytes <= 0:
        return 0.0
    return (n_bytes + debt_bytes) * 8 / bandwidth_bps


def bucket_for(bandwidth_bps: int, now_ns: int, burst_s: float = 0.25) -> TokenBucket:
    """A bucket for a cap in bits per second (0: none), holding ``burst_s`` seconds' worth."""
    rate = bandwidth_bps / 8.0
    return TokenBucket.full(rate, max(rate * burst_s, 1.0) if rate else 0.0, now_ns)


# ---- resumption -----------------------------------------------------------------------------


def next_chunk(offset: int, length: int, chunk_bytes: int) -> tuple[int, int]:
    """(start, size) of the next chunk to send from the server's ``offset`` (size 0 when done)."""
    if not 0 <= offset <= length:
        raise ValueError(f"offset {offset} outside 0..{length}")
    if chunk_bytes <= 0:
        raise ValueError("chunk_bytes must be positive")
    return offset, min(chunk_bytes, length - offset)
