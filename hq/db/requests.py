"""The index's queries for requests to units (``unit_requests``), over one connection each.

``SqlIndex`` calls these inside its transactions; nothing here knows HTTP or signatures.
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from hq.db.schema import unit_requests as t
from hq.records import UnitRequest


def to_record(row: RowMapping) -> UnitRequest:
    return UnitRequest(
        request_id=row["request_id"], device_id=row["device_id"], kind=row["kind"],
        params=json.loads(row["params"]), requested_by=row["requested_by"],
        issued_utc_ns=int(row["issued_utc_ns"]), expires_utc_ns=int(row["expires_utc_ns"]),
        signed=bytes(row["signed"]), state=row["state"], delivered_utc_ns=row["delivered_utc_ns"],
        deliveries=int(row["deliveries"]), outcome=row["outcome"],
        result=None if row["result"] is None else bytes(row["result"]), answered_utc_ns=row["answered_utc_ns"],
    )


def _due(now_ns: int, redeliver_before_ns: int) -> sa.ColumnElement[bool]:
    """Unexpired requests that are queued, or delivered before ``redeliver_before_ns`` and still
    without a result."""
    return sa.and_(t.c.expires_utc_ns > now_ns, sa.or_(
        t.c.state == "queued", sa.and_(t.c.state == "delivered", t.c.delivered_utc_ns < redeliver_before_ns)))


def insert(conn: Connection, request: UnitRequest) -> None:
    conn.execute(t.insert().values(
        request_id=request.request_id, device_id=request.device_id, kind=request.kind,
        params=json.dumps(request.params, sort_keys=True), requested_by=request.requested_by,
        issued_utc_ns=request.issued_utc_ns, expires_utc_ns=request.expires_utc_ns, signed=request.signed,
        state="queued", deliveries=0))


def take_pending(conn: Connection, device_id: str, now_ns: int, redeliver_before_ns: int, limit: int) -> list[bytes]:
    """The signed bytes of a unit's requests due for delivery, marked delivered now: queued ones,
    and delivered ones without a result since before ``redeliver_before_ns``; none expired. Rows
    are locked as they are taken (PostgreSQL ``FOR UPDATE SKIP LOCKED``), so two nodes polling
    for one unit at once do not both hand out the same request."""
    query = (sa.select(t.c.request_id, t.c.signed)
             .where(t.c.device_id == device_id, _due(now_ns, redeliver_before_ns))
             .order_by(t.c.issued_utc_ns, t.c.request_id).limit(limit))
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    rows = list(conn.execute(query))
    for request_id, _ in rows:
        conn.execute(t.update().where(t.c.request_id == request_id).values(
            state="delivered", delivered_utc_ns=now_ns, deliveries=t.c.deliveries + 1))
    return [bytes(signed) for _, signed in rows]


def devices_due(conn: Connection, device_ids: list[str], now_ns: int, redeliver_before_ns: int) -> set[str]:
    """Which of ``device_ids`` have a request due for delivery (one query for every waiting poll)."""
    if not device_ids:
        return set()
    query = sa.select(t.c.device_id).distinct().where(t.c.device_id.in_(device_ids), _due(now_ns, redeliver_before_ns))
    return {str(d) for (d,) in conn.execute(query)}


def answer(conn: Connection, request_id: str, outcome: str, result: bytes, now_ns: int) -> bool:
    """Keep the unit's signed result; False when the request already has one (kept as it was)."""
    cur = conn.execute(t.update().where(t.c.request_id == request_id, t.c.state != "answered").values(
        state="answered", outcome=outcome, result=result, answered_utc_ns=now_ns))
    return cur.rowcount == 1


def select(device_id: str | None = None, request_id: str | None = None) -> sa.Select[tuple[object, ...]]:
    query = t.select()
    if device_id is not None:
        query = query.where(t.c.device_id == device_id)
    if request_id is not None:
        query = query.where(t.c.request_id == request_id)
    return query.order_by(t.c.issued_utc_ns, t.c.request_id)
