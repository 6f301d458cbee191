"""The evidence lifecycle's decisions: categories and their retention, what is held, what is due for
the deletion queue and for deletion. Pure: no I/O, ``now_ns`` is an argument.

A *recording* (all chain entries of one ``recording_id`` of a unit; an entry outside any recording
is one on its own, ``entry-<seq>``) is what carries categories, sits in cases and is deleted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

NS_PER_S = 1_000_000_000
DAY_S = 86_400
YEAR_S = 365 * DAY_S
# Axon Evidence and Motorola hold deleted evidence 7 days before it is gone; a supervisor restores it meanwhile.
DELETION_QUEUE_S = 7 * DAY_S
RECORDING_STATES = ("kept", "queued", "deleting", "deleted")
CASE_STATES = ("open", "closed")
# A category's role: ``default`` applies to a recording with no category, ``marked`` is assigned at
# ingest to a recording the officer marked on the unit (at most one category has each role).
ROLES = ("default", "marked")
CATEGORY_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,47}$")
CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,63}$")
RECORDING_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class LifecycleError(Exception):
    """A lifecycle action that is refused or malformed; the message says what and what to do."""


@dataclass(frozen=True, slots=True)
class Category:
    """A retention category: ``retention_s`` None keeps evidence until someone deletes it."""

    name: str
    retention_s: int | None
    role: str | None = None
    doc: str = ""


# The categories a new index starts with, one declaration each (a site changes them with
# `bodycam-hq category add/set`; assignments keep their name).
DEFAULT_CATEGORIES = (
    Category("uncategorized", 3 * YEAR_S, "default",
             "no category assigned yet: Axon Evidence's default retention, 3 years"),
    Category("pending-review", None, "marked",
             "the officer marked it on the unit: kept until a supervisor categorises it"),
    Category("no-incident", 90 * DAY_S, None, "nothing happened: kept 90 days"),
    Category("traffic", YEAR_S, None, "a traffic stop: kept 1 year"),
    Category("arrest", 7 * YEAR_S, None, "an arrest: kept 7 years"),
    Category("keep", None, None, "kept until deleted manually"),
)


@dataclass(frozen=True, slots=True)
class Recording:
    """One recording as the index holds it, with what the lifecycle needs to decide."""

    device_id: str
    recording_id: str
    recorded_utc_ns: int  # the first entry's start: retention counts from here
    end_utc_ns: int
    entries: int
    marks: int
    state: str
    categories: tuple[str, ...] = ()
    held: bool = False  # in an open case (legal hold)
    queued_utc_ns: int | None = None
    queued_by: str | None = None
    queue_reason: str | None = None
    kept_by_restore: bool = False
    deleted_utc_ns: int | None = None
    hold_applied: bool = False  # the store's legal hold as last set

    @property
    def key(self) -> str:
        return f"{self.device_id}/{self.recording_id}"


@dataclass(frozen=True, slots=True)
class Protection:
    """What the store itself says about one stored object: its legal hold and its lock's end."""

    legal_hold: bool
    retain_until_ns: int | None


def parse_retention(text: str) -> int | None:
    """``90d``, ``12w``, ``7y``, ``36h`` or ``manual`` (kept until deleted) into seconds or None."""
    t = text.strip().lower()
    if t in ("manual", "forever", "until-deleted"):
        return None
    m = re.fullmatch(r"([1-9][0-9]{0,5})([hdwy])", t)
    if m is None:
        raise LifecycleError(f"retention {text!r}: give a number and a unit (36h, 90d, 12w, 7y) or 'manual'")
    return int(m.group(1)) * {"h": 3600, "d": DAY_S, "w": 7 * DAY_S, "y": YEAR_S}[m.group(2)]


def describe_retention(retention_s: int | None) -> str:
    if retention_s is None:
        return "until deleted manually"
    for unit, size in (("y", YEAR_S), ("w", 7 * DAY_S), ("d", DAY_S), ("h", 3600)):
        if retention_s % size == 0:
            return f"{retention_s // size}{unit}"
    return f"{retention_s}s"


def check_name(pattern: re.Pattern[str], text: str, what: str) -> str:
    if not pattern.match(text):
        raise LifecycleError(f"{what} {text!r}: use letters, digits, '.', '-' (up to 64 characters)")
    return text


def effective_retention_s(assigned: Iterable[str], categories: Mapping[str, Category]) -> int | None:
    """The longest retention of the assigned categories (None, until deleted, beats any period); a
    recording with none gets the default category's; an unknown name keeps it until deleted."""
    names = list(assigned)
    if not names:
        names = [c.name for c in categories.values() if c.role == "default"]
        if not names:
            return None
    longest = 0
    for name in names:
        category = categories.get(name)
        if category is None or category.retention_s is None:
            return None
        longest = max(longest, category.retention_s)
    return longest


def retain_until_ns(rec: Recording, categories: Mapping[str, Category]) -> int | None:
    """When retention of ``rec`` ends (from the recorded date), None if kept until deleted."""
    retention = effective_retention_s(rec.categories, categories)
    return None if retention is None else rec.recorded_utc_ns + retention * NS_PER_S


def queue_due(rec: Recording, categories: Mapping[str, Category], now_ns: int) -> bool:
    """Whether retention puts ``rec`` in the deletion queue now: kept, not held, not restored by a
    person since, and past its retention."""
    if rec.state != "kept" or rec.held or rec.kept_by_restore:
        return False
    until = retain_until_ns(rec, categories)
    return until is not None and until <= now_ns


def deletion_due(rec: Recording, now_ns: int, queue_s: int = DELETION_QUEUE_S) -> bool:
    """Whether a queued recording has waited its time and may go (a held one never does);
    ``deleting`` is a deletion that stopped part way and goes on."""
    if rec.held:
        return False
    if rec.state == "deleting":
        return True
    return rec.state == "queued" and rec.queued_utc_ns is not None and rec.queued_utc_ns + queue_s * NS_PER_S <= now_ns


def deletion_refusal(held_in_index: bool, protections: Sequence[Protection], now_ns: int) -> str | None:
    """Why a recording may not be deleted now, checking both layers: the index's hold and each
    stored object's legal hold and lock. None when nothing stands in the way."""
    if held_in_index:
        return "on legal hold in the index (an open case holds it)"
    for p in protections:
        if p.legal_hold:
            return "the store keeps a legal hold on one of its objects"
        if p.retain_until_ns is not None and p.retain_until_ns > now_ns:
            return "one of its objects is locked in the store until a later date (the statutory minimum)"
    return None


def hold_to_apply(rec: Recording) -> bool | None:
    """The legal hold to set on the stored objects of ``rec`` (True/False), or None when the
    store already agrees with the index. Deleted recordings have no objects left."""
    if rec.state == "deleted" or rec.held == rec.hold_applied:
        return None
    return rec.held
