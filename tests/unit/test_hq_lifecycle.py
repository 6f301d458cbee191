"""The lifecycle's pure decisions (hq/lifecycle.py): retention by category (longest wins, from the
recorded date, until deleted manually), what is due for the queue and for deletion, what the two
layers' holds and locks allow, and which store holds to change."""

from __future__ import annotations

from dataclasses import replace

import pytest

from hq.lifecycle import (
    DAY_S,
    DEFAULT_CATEGORIES,
    NS_PER_S,
    YEAR_S,
    Category,
    LifecycleError,
    Protection,
    Recording,
    deletion_due,
    deletion_refusal,
    describe_retention,
    effective_retention_s,
    hold_to_apply,
    parse_retention,
    queue_due,
    retain_until_ns,
)

T0 = 1_790_000_000 * NS_PER_S
CATS = {c.name: c for c in DEFAULT_CATEGORIES}


def rec(*categories: str, **fields: object) -> Recording:
    base = Recording("unit-1", "rec-1", T0, T0 + 60 * NS_PER_S, 6, 0, "kept", categories=tuple(categories))
    return replace(base, **fields)  # type: ignore[arg-type]


def days(n: float) -> int:
    return int(n * DAY_S * NS_PER_S)


def test_the_longest_retention_wins_and_manual_beats_any_period() -> None:
    assert effective_retention_s(["no-incident"], CATS) == 90 * DAY_S
    assert effective_retention_s(["no-incident", "arrest", "traffic"], CATS) == 7 * YEAR_S
    assert effective_retention_s(["arrest", "keep"], CATS) is None
    assert effective_retention_s([], CATS) == 3 * YEAR_S  # the default category's
    assert effective_retention_s([], {"x": Category("x", DAY_S)}) is None  # no default: kept
    assert effective_retention_s(["retired-name"], CATS) is None  # an unknown name never shortens


def test_retention_counts_from_the_recorded_date() -> None:
    assert retain_until_ns(rec("no-incident"), CATS) == T0 + days(90)
    assert retain_until_ns(rec("keep"), CATS) is None


def test_queue_due_after_retention_unless_held_restored_or_not_kept() -> None:
    r = rec("no-incident")
    assert not queue_due(r, CATS, T0 + days(90) - 1)
    assert queue_due(r, CATS, T0 + days(90))
    assert not queue_due(replace(r, held=True), CATS, T0 + days(400))
    assert not queue_due(replace(r, kept_by_restore=True), CATS, T0 + days(400))
    assert not queue_due(replace(r, state="queued"), CATS, T0 + days(400))
    assert not queue_due(rec("pending-review"), CATS, T0 + days(10_000))


def test_deletion_waits_out_the_queue_and_never_takes_a_held_recording() -> None:
    queued = rec("no-incident", state="queued", queued_utc_ns=T0 + days(90))
    assert not deletion_due(queued, T0 + days(97) - 1)
    assert deletion_due(queued, T0 + days(97))
    assert not deletion_due(replace(queued, held=True), T0 + days(1000))
    assert deletion_due(replace(queued, state="deleting"), T0)  # a deletion that stopped part way goes on
    assert not deletion_due(rec(), T0 + days(10_000))


def test_both_layers_are_checked_before_deleting() -> None:
    free = Protection(legal_hold=False, retain_until_ns=T0)
    assert deletion_refusal(False, [free, free], T0) is None
    assert "index" in (deletion_refusal(True, [free], T0) or "")
    assert "legal hold" in (deletion_refusal(False, [free, Protection(True, None)], T0) or "")
    assert "locked" in (deletion_refusal(False, [Protection(False, T0 + 1)], T0) or "")


def test_store_holds_follow_the_index() -> None:
    assert hold_to_apply(rec(held=True)) is True
    assert hold_to_apply(rec(held=False, hold_applied=True)) is False
    assert hold_to_apply(rec(held=True, hold_applied=True)) is None
    assert hold_to_apply(rec(held=False, hold_applied=True, state="deleted")) is None


@pytest.mark.parametrize(("text", "seconds"), [("90d", 90 * DAY_S), ("7y", 7 * YEAR_S), ("36h", 36 * 3600),
                                               ("12w", 84 * DAY_S), ("manual", None), (" Manual ", None)])
def test_retention_parses_and_reads_back(text: str, seconds: int | None) -> None:
    assert parse_retention(text) == seconds
    assert parse_retention(describe_retention(seconds).replace("until deleted manually", "manual")) == seconds


@pytest.mark.parametrize("text", ["", "90", "0d", "-1d", "9q", "1.5y", "1000000d"])
def test_bad_retention_says_what_to_write(text: str) -> None:
    with pytest.raises(LifecycleError, match="give a number and a unit"):
        parse_retention(text)
