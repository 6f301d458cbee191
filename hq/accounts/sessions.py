"""When an operations-room session ends: idle and absolute timeouts. Pure."""

from __future__ import annotations

from dataclasses import dataclass

NS_PER_S = 1_000_000_000
IDLE_S = 15 * 60
ABSOLUTE_S = 12 * 3600


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    idle_s: float = IDLE_S
    absolute_s: float = ABSOLUTE_S


def expiry(created_ns: int, last_seen_ns: int, now_ns: int, policy: SessionPolicy) -> str | None:
    """``idle`` or ``absolute`` when a session has timed out at ``now_ns``, else None."""
    if now_ns - created_ns >= policy.absolute_s * NS_PER_S:
        return "absolute"
    if now_ns - last_seen_ns >= policy.idle_s * NS_PER_S:
        return "idle"
    return None
