"""The query behind evidence search: a unit's segments grouped into recordings, filtered, paged.

Pure query building (SQLAlchemy Core, the same SQL on SQLite and PostgreSQL); ``SqlIndex`` runs it.
"""

from __future__ import annotations

import sqlalchemy as sa

from hq.db.schema import devices, evidence
from hq.records import BACKGROUND_PREFIX, RecordingFilter, RecordingSummary


def _grouped(f: RecordingFilter) -> sa.Select[tuple[object, ...]]:
    e, d = evidence.c, devices.c
    warned = sa.func.sum(sa.case((e.warnings != "[]", 1), else_=0))
    last = sa.func.max(e.seq)
    status = sa.case(
        (last > d.contiguous_through, "incomplete"),
        (warned > 0, "warnings"),
        else_="verified",
    )
    query = (
        sa.select(
            e.device_id, e.recording_id,
            sa.func.min(e.utc_start_ns).label("utc_start_ns"), sa.func.max(e.utc_end_ns).label("utc_end_ns"),
            sa.func.count().label("segments"), sa.func.min(e.seq).label("first_seq"), last.label("last_seq"),
            sa.func.sum(e.marks).label("marks"), sa.func.sum(e.size_bytes).label("size_bytes"),
            status.label("status"),
        )
        .select_from(evidence.join(devices, d.device_id == e.device_id))
        .where(e.kind == "segment", e.recording_id.is_not(None))
        .group_by(e.device_id, e.recording_id, d.contiguous_through)
    )
    if f.device_id is not None:
        query = query.where(e.device_id == f.device_id)
    if f.recording_id is not None:
        query = query.where(e.recording_id.startswith(f.recording_id, autoescape=True))
    if f.background is not None:
        copied = e.recording_id.startswith(BACKGROUND_PREFIX, autoescape=True)
        query = query.where(copied if f.background else sa.not_(copied))
    if f.from_ns is not None:
        query = query.having(sa.func.max(e.utc_end_ns) >= f.from_ns)
    if f.to_ns is not None:
        query = query.having(sa.func.min(e.utc_start_ns) <= f.to_ns)
    if f.marked is not None:
        query = query.having(sa.func.sum(e.marks) > 0 if f.marked else sa.func.sum(e.marks) == 0)
    if f.status is not None:
        query = query.having(status == f.status)
    return query


def recordings_page(f: RecordingFilter) -> sa.Select[tuple[object, ...]]:
    """One page of recordings, newest first."""
    return (_grouped(f).order_by(sa.desc("utc_start_ns"), evidence.c.device_id, evidence.c.recording_id)
            .limit(f.limit).offset(f.offset))


def recordings_count(f: RecordingFilter) -> sa.Select[int]:
    """How many recordings the filter finds in all pages."""
    return sa.select(sa.func.count()).select_from(_grouped(f).subquery())


def summary(row: sa.RowMapping) -> RecordingSummary:
    return RecordingSummary(
        device_id=str(row["device_id"]), recording_id=str(row["recording_id"]),
        utc_start_ns=int(row["utc_start_ns"]), utc_end_ns=int(row["utc_end_ns"]), segments=int(row["segments"]),
        first_seq=int(row["first_seq"]), last_seq=int(row["last_seq"]), marks=int(row["marks"] or 0),
        size_bytes=int(row["size_bytes"] or 0), status=str(row["status"]),
    )
