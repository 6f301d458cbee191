"""Pure decisions of the background recording: which camera frames to keep, which ring entries
to let go, and what of a requested range the ring can still give."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from agent.storeschema import RingEntry

NS_PER_S = 1_000_000_000


def keep_frame(mono_ns: int, next_due_ns: int, period_ns: int) -> tuple[bool, int]:
    """Decimate a camera's frames to the background rate: (keep this one?, when the next is due).
    A frame at the due time (or up to a quarter period before it: capture timestamps jitter, and
    30 fps does not divide into 10 fps exactly in nanoseconds) is kept and the next is due one
    period later; after a gap longer than a period the schedule restarts from this frame (no
    burst to catch up)."""
    if mono_ns + period_ns // 4 < next_due_ns:
        return False, next_due_ns
    following = next_due_ns + period_ns
    return True, following if mono_ns < following else mono_ns + period_ns


def expired(entries: Sequence[RingEntry], now_utc_ns: int, keep_s: float) -> list[RingEntry]:
    """Ring entries older than the ring's age (their end before now - keep), oldest first."""
    horizon = now_utc_ns - int(keep_s * NS_PER_S)
    return [e for e in entries if e.utc_end_ns < horizon]


def to_free(entries: Sequence[RingEntry], bytes_wanted: int) -> list[RingEntry]:
    """The oldest ring entries that together free at least ``bytes_wanted`` (all, if they do not)."""
    chosen: list[RingEntry] = []
    freed = 0
    for e in sorted(entries, key=lambda x: x.seq):
        if freed >= bytes_wanted:
            break
        chosen.append(e)
        freed += e.bytes
    return chosen


@dataclass(frozen=True, slots=True)
class Coverage:
    """What the ring holds of a requested range: the entries overlapping it and the parts of the
    range nothing covers (rotated out, never recorded, or not yet sealed), as (start, end) UTC ns."""

    entries: tuple[RingEntry, ...]
    missing: tuple[tuple[int, int], ...]

    @property
    def complete(self) -> bool:
        return bool(self.entries) and not self.missing


def cover(entries: Sequence[RingEntry], from_utc_ns: int, to_utc_ns: int, slack_ns: int = NS_PER_S) -> Coverage:
    """The entries overlapping [from, to) (one that only touches it does not) and the holes in
    between (a hole shorter than ``slack_ns``, a segment boundary's rounding, is none)."""
    chosen = sorted((e for e in entries if e.utc_end_ns > from_utc_ns and e.utc_start_ns < to_utc_ns),
                    key=lambda e: e.utc_start_ns)
    missing: list[tuple[int, int]] = []
    at = from_utc_ns
    for e in chosen:
        if e.utc_start_ns - at > slack_ns:
            missing.append((at, e.utc_start_ns))
        at = max(at, e.utc_end_ns)
    if to_utc_ns - at > slack_ns:
        missing.append((at, to_utc_ns))
    return Coverage(tuple(chosen), tuple(missing))
