"""Sync policy, pure: upload order, backoff bounds and full jitter, token bucket maths, chunks."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.sync.policy import (
    NS_PER_S,
    Backoff,
    TokenBucket,
    bucket_for,
    choose_next,
    ingest_polls,
    next_chunk,
    should_preempt,
    upload_order,
)


@dataclass(frozen=True)
class E:
    seq: int
    priority: int = 0
    marks: int = 0


# ---- ordering -------------------------------------------------------------------------------


def test_priority_first_then_marks_then_oldest() -> None:
    entries = [E(5), E(2), E(9, priority=1), E(7, marks=1), E(3, priority=1), E(1)]
    assert [e.seq for e in upload_order(entries)] == [3, 9, 7, 1, 2, 5]


def test_choose_next_skips_deferred_entries_until_their_time() -> None:
    entries = [E(1, priority=1), E(2), E(3)]
    deferred = {1: 100, 2: 50}
    assert choose_next(entries, deferred, now_ns=10).seq == 3  # type: ignore[union-attr]
    assert choose_next(entries, deferred, now_ns=50).seq == 2  # type: ignore[union-attr]
    assert choose_next(entries, deferred, now_ns=100).seq == 1  # type: ignore[union-attr]
    assert choose_next([E(1)], {1: 100}, now_ns=99) is None
    assert choose_next([], {}, now_ns=0) is None


def test_preempt_only_for_a_higher_priority_other_entry() -> None:
    current = E(4)
    assert should_preempt(current, [E(9, priority=1)])
    assert not should_preempt(current, [E(1), E(2, marks=3)])
    assert not should_preempt(E(4, priority=1), [E(9, priority=1)])
    assert not should_preempt(E(4), [E(4, priority=5)])  # itself, re-read from the store
    assert not should_preempt(current, [])


# ---- backoff --------------------------------------------------------------------------------


def test_backoff_ceiling_doubles_from_initial_to_max() -> None:
    b = Backoff(initial_s=1.0, max_s=300.0)
    assert [b.ceiling_s(n) for n in range(0, 11)] == [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 300]
    assert b.ceiling_s(10_000) == 300.0  # no overflow after a very long outage


def test_backoff_is_full_jitter_within_bounds_and_seeded() -> None:
    b = Backoff()
    rng = random.Random(1234)
    for failures in range(1, 20):
        delays = [b.delay_s(failures, rng) for _ in range(200)]
        assert all(0.0 <= d <= b.ceiling_s(failures) for d in delays)
        # Full jitter spreads over the whole range, not a narrow band near the ceiling.
        assert min(delays) < 0.2 * b.ceiling_s(failures) and max(delays) > 0.8 * b.ceiling_s(failures)
    # The same seed gives the same delays: reproducible in tests, different across units.
    a, c = random.Random(7), random.Random(7)
    assert [b.delay_s(4, a) for _ in range(5)] == [b.delay_s(4, c) for _ in range(5)]


def test_backoff_with_no_failure_waits_nothing() -> None:
    assert Backoff().delay_s(0, random.Random(1)) == 0.0


@pytest.mark.parametrize(("initial", "maximum"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_backoff_bounds_are_checked(initial: float, maximum: float) -> None:
    with pytest.raises(ValueError):
        Backoff(initial, maximum)


@given(st.integers(0, 1000), st.integers(0, 2**32))
def test_backoff_never_exceeds_max(failures: int, seed: int) -> None:
    b = Backoff(0.5, 120.0)
    assert 0.0 <= b.delay_s(failures, random.Random(seed)) <= 120.0


# ---- token bucket ---------------------------------------------------------------------------


def test_unlimited_bucket_never_waits() -> None:
    bucket = bucket_for(0, now_ns=0)
    assert bucket.unlimited
    for _ in range(3):
        bucket, wait = bucket.take(10**9, now_ns=0)
        assert wait == 0.0


def test_bucket_spends_the_burst_then_waits_at_the_rate() -> None:
    bucket = TokenBucket.full(rate_bytes_per_s=1000.0, burst_bytes=500.0, now_ns=0)
    bucket, wait = bucket.take(500, now_ns=0)
    assert wait == 0.0
    bucket, wait = bucket.take(250, now_ns=0)
    assert wait == pytest.approx(0.25)
    # After waiting, the debt is repaid and the next send waits only for itself.
    bucket, wait = bucket.take(100, now_ns=250_000_000)
    assert wait == pytest.approx(0.1)


def test_bucket_refills_but_never_above_the_burst() -> None:
    bucket = TokenBucket.full(1000.0, 500.0, now_ns=0)
    bucket, _ = bucket.take(500, now_ns=0)
    assert bucket.refill(200_000_000).tokens == pytest.approx(200.0)
    assert bucket.refill(10 * NS_PER_S).tokens == 500.0
    # Time that seems to go backwards earns nothing and does not rewind the bucket.
    later = bucket.refill(NS_PER_S)
    assert later.refill(NS_PER_S // 2).tokens == later.tokens


def test_bucket_for_converts_bits_to_bytes() -> None:
    bucket = bucket_for(8_000_000, now_ns=0)  # 8 Mbit/s = 1 MB/s
    assert bucket.rate_bytes_per_s == 1_000_000
    assert bucket.burst_bytes == 250_000


@given(st.lists(st.tuples(st.integers(1, 100_000), st.integers(0, 2 * NS_PER_S)), min_size=1, max_size=50))
def test_sending_at_the_cap_takes_at_least_bytes_over_rate(sends: list[tuple[int, int]]) -> None:
    """Following the bucket's waits, n bytes never go out faster than burst + rate * time."""
    rate, burst = 10_000.0, 2_000.0
    bucket = TokenBucket.full(rate, burst, now_ns=0)
    now, total = 0, 0
    for size, pause_ns in sends:
        now += pause_ns
        bucket, wait = bucket.take(size, now)
        now += round(wait * NS_PER_S)
        total += size
    assert total <= burst + rate * now / NS_PER_S + 1


def test_bucket_refuses_negative_settings() -> None:
    with pytest.raises(ValueError):
        TokenBucket.full(-1.0, 1.0, 0)


# ---- chunks ---------------------------------------------------------------------------------


def test_next_chunk_from_the_servers_offset() -> None:
    assert next_chunk(0, 10, 4) == (0, 4)
    assert next_chunk(8, 10, 4) == (8, 2)
    assert next_chunk(10, 10, 4) == (10, 0)
    with pytest.raises(ValueError):
        next_chunk(11, 10, 4)
    with pytest.raises(ValueError):
        next_chunk(0, 10, 0)


def test_ingest_polls_double_up_to_the_cap_and_fit_the_total() -> None:
    assert ingest_polls(120.0) == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert ingest_polls(5.0) == [2.0, 3.0]
    assert ingest_polls(0.0) == [] and ingest_polls(-1.0) == []
    assert sum(ingest_polls(1000.0, first_s=1.0, max_s=7.0)) == 1000.0
