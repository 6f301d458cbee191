"""The index side of the evidence lifecycle at ingest: each stored entry joins its recording
(created on its first entry, its span and marks widened by the next), and a recording the officer
marked gets the category whose role is ``marked``. Runs inside ``add_evidence``'s transaction.

``refresh_retention`` keeps ``recordings.retain_until_ns`` true (the pure rule is
``hq.lifecycle.retain_until_ns``), so the periodic pass finds what is due with one indexed query.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hq.db.schema import categories, recording_categories, recordings
from hq.lifecycle import Category, Recording, retain_until_ns
from hq.records import Evidence

MARK_ACTOR = "unit-mark"  # who assigned a category that came from the unit's marks


def recording_of(entry: Evidence) -> str:
    """The recording an entry belongs to: the manifest's, or the entry alone (``entry-<seq>``)."""
    return entry.recording_id or f"entry-{entry.seq}"


def recording_key(e: Any) -> sa.ColumnElement[str]:
    """``recording_of`` in SQL, over the evidence table's columns ``e``."""
    return sa.func.coalesce(e.recording_id, sa.literal("entry-") + sa.cast(e.seq, sa.Text))


def read_categories(conn: Connection) -> dict[str, Category]:
    c = categories.c
    return {r.name: Category(r.name, r.retention_s, r.role, r.doc)
            for r in conn.execute(sa.select(c.name, c.retention_s, c.role, c.doc))}


def assigned(conn: Connection, device_id: str, recording_id: str) -> tuple[str, ...]:
    rc = recording_categories.c
    rows = conn.execute(sa.select(rc.category).where(rc.device_id == device_id, rc.recording_id == recording_id)
                        .order_by(rc.category))
    return tuple(str(r.category) for r in rows)


def refresh_retention(conn: Connection, device_id: str, recording_id: str,
                      known: dict[str, Category] | None = None) -> int | None:
    """Recompute and store when the recording's retention ends; return it (None: until deleted)."""
    r = recordings.c
    key = (r.device_id == device_id, r.recording_id == recording_id)
    recorded = conn.execute(sa.select(r.recorded_utc_ns).where(*key)).scalar_one()
    rec = Recording(device_id, recording_id, int(recorded), 0, 0, 0, "kept",
                    categories=assigned(conn, device_id, recording_id))
    until = retain_until_ns(rec, known if known is not None else read_categories(conn))
    conn.execute(recordings.update().where(*key).values(retain_until_ns=until))
    return until


def note_entry(conn: Connection, entry: Evidence, recording_id: str, now_ns: int) -> None:
    """Create or widen the entry's recording (``recording_id``, from ``recording_of``); assign the
    ``marked`` category if it carries marks."""
    r = recordings.c
    key = (r.device_id == entry.device_id, r.recording_id == recording_id)
    row = conn.execute(sa.select(r.recorded_utc_ns, r.end_utc_ns).where(*key).with_for_update()).first()
    if row is None:
        conn.execute(recordings.insert().values(
            device_id=entry.device_id, recording_id=recording_id, recorded_utc_ns=entry.utc_start_ns,
            end_utc_ns=entry.utc_end_ns, entries=1, marks=entry.marks, state="kept", kept_by_restore=False,
            hold_applied=False))
    else:
        conn.execute(recordings.update().where(*key).values(
            recorded_utc_ns=min(int(row.recorded_utc_ns), entry.utc_start_ns),
            end_utc_ns=max(int(row.end_utc_ns), entry.utc_end_ns),
            entries=r.entries + 1, marks=r.marks + entry.marks))
    if entry.marks > 0:
        marked = conn.execute(sa.select(categories.c.name).where(categories.c.role == "marked")).scalar()
        if marked is not None and marked not in assigned(conn, entry.device_id, recording_id):
            conn.execute(recording_categories.insert().values(
                device_id=entry.device_id, recording_id=recording_id, category=marked,
                assigned_by=MARK_ACTOR, assigned_utc_ns=now_ns))
    refresh_retention(conn, entry.device_id, recording_id)
