"""Sign-in lockout with exponential backoff, per account name and per source address. Pure.

A name that does not exist is counted like one that does, so the answers never tell them apart.
"""

from __future__ import annotations

from dataclasses import dataclass

NS_PER_S = 1_000_000_000


@dataclass(frozen=True, slots=True)
class LockoutPolicy:
    """``free``: failures allowed before any wait; then each failure doubles the wait from
    ``base_s``, up to ``max_s``; a key untouched for ``forget_s`` starts again from zero."""

    free: int
    base_s: float = 1.0
    max_s: float = 900.0
    forget_s: float = 3600.0


ACCOUNT_POLICY = LockoutPolicy(free=5)
SOURCE_POLICY = LockoutPolicy(free=20)


@dataclass(frozen=True, slots=True)
class Failures:
    """What is kept per key (``user:NAME`` or ``source:ADDRESS``)."""

    count: int
    last_ns: int


def current(failures: Failures | None, policy: LockoutPolicy, now_ns: int) -> int:
    """The failures that still count at ``now_ns``."""
    if failures is None or now_ns - failures.last_ns >= policy.forget_s * NS_PER_S:
        return 0
    return failures.count


def wait_s(failures: Failures | None, policy: LockoutPolicy, now_ns: int) -> float:
    """Seconds before another try is considered (0: now)."""
    count = current(failures, policy, now_ns)
    if failures is None or count < policy.free:
        return 0.0
    delay_s: float = min(policy.max_s, policy.base_s * 2.0 ** min(count - policy.free, 40))
    return max(0.0, failures.last_ns / NS_PER_S + delay_s - now_ns / NS_PER_S)


def after_failure(failures: Failures | None, policy: LockoutPolicy, now_ns: int) -> Failures:
    return Failures(current(failures, policy, now_ns) + 1, now_ns)
