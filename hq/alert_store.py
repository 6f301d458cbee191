"""Where alerts are kept: the index's ``alerts`` table, on SQLite or PostgreSQL.

``AlertStore`` is what the operations service needs; ``SqlAlertStore`` implements it over the
index's engine (one database, so an alert and the heartbeat it came from are in the same place).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, RowMapping

from hq.alerts import EVENTS, Alert, UnitFacts
from hq.db import tx
from hq.db.schema import alerts, devices, quarantine


class AlertStore(Protocol):
    """Raised, cleared and acknowledged alerts. Every method is one transaction; thread-safe."""

    def standing(self, device_id: str | None = None) -> list[Alert]: ...
    def recent(self, limit: int, device_id: str | None = None) -> list[Alert]: ...
    def get(self, alert_id: int) -> Alert | None: ...
    def raise_alert(self, device_id: str, kind: str, detail: Mapping[str, Any], now_ns: int) -> Alert | None: ...
    def clear(self, alert_id: int, now_ns: int) -> Alert | None: ...
    def acknowledge(self, alert_id: int, user: str, now_ns: int) -> Alert | None: ...
    def last_raised(self, kind: str) -> dict[str, int]: ...
    def latest_quarantines(self) -> dict[str, int]: ...
    def contacts(self) -> list[UnitFacts]: ...


def _alert(row: RowMapping) -> Alert:
    return Alert(id=int(row["id"]), device_id=row["device_id"], kind=row["kind"],
                 raised_utc_ns=int(row["raised_utc_ns"]), detail=json.loads(row["detail"]),
                 cleared_utc_ns=row["cleared_utc_ns"], acknowledged_utc_ns=row["acknowledged_utc_ns"],
                 acknowledged_by=row["acknowledged_by"])


def _insert(conn: Connection) -> Any:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert


class SqlAlertStore:
    """Alerts in the index's database. Thread contract: thread-safe, a pooled connection per call;
    writes on SQLite begin IMMEDIATE like the index's. Two nodes raising one alert at once store it
    once (the partial unique index ``alerts_standing``); clearing and acknowledging are one row
    update each, so only one of two racing operators acknowledges."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._writer = tx.writer(engine)

    def _conn(self, doing: str, write: bool = False) -> AbstractContextManager[Connection]:
        return tx.transaction(self._writer if write else self._engine, doing, write)

    def _select(self, doing: str, query: sa.Select[Any]) -> list[Alert]:
        with self._conn(doing) as conn:
            return [_alert(r) for r in conn.execute(query).mappings()]

    def standing(self, device_id: str | None = None) -> list[Alert]:
        query = alerts.select().where(alerts.c.cleared_utc_ns.is_(None))
        if device_id is not None:
            query = query.where(alerts.c.device_id == device_id)
        return self._select("listing standing alerts", query.order_by(alerts.c.id))

    def recent(self, limit: int, device_id: str | None = None) -> list[Alert]:
        """Standing alerts and the ``limit`` newest of all, newest first."""
        query = alerts.select()
        if device_id is not None:
            query = query.where(alerts.c.device_id == device_id)
        newest = self._select("listing alerts", query.order_by(alerts.c.id.desc()).limit(limit))
        seen = {a.id for a in newest}
        older = [a for a in self.standing(device_id) if a.id not in seen]
        return sorted(newest + older, key=lambda a: a.id, reverse=True)

    def get(self, alert_id: int) -> Alert | None:
        rows = self._select("reading an alert", alerts.select().where(alerts.c.id == alert_id))
        return rows[0] if rows else None

    def raise_alert(self, device_id: str, kind: str, detail: Mapping[str, Any], now_ns: int) -> Alert | None:
        """Raise ``kind`` for ``device_id``; None when one already stands (nothing changes)."""
        text = json.dumps(dict(detail), sort_keys=True, default=str)
        with self._conn(f"raising {kind} for {device_id}", write=True) as conn:
            stmt = _insert(conn)(alerts).values(device_id=device_id, kind=kind, raised_utc_ns=now_ns, detail=text)
            stmt = stmt.on_conflict_do_nothing(index_elements=[alerts.c.device_id, alerts.c.kind],
                                               index_where=alerts.c.cleared_utc_ns.is_(None))
            row = conn.execute(stmt.returning(*alerts.c)).mappings().first()
        return None if row is None else _alert(row)

    def _update(self, doing: str, where: sa.ColumnElement[bool], **values: Any) -> Alert | None:
        with self._conn(doing, write=True) as conn:
            row = conn.execute(alerts.update().where(where).values(**values).returning(*alerts.c)).mappings().first()
        return None if row is None else _alert(row)

    def clear(self, alert_id: int, now_ns: int) -> Alert | None:
        """Clear a standing alert; None when it was not standing."""
        return self._update(f"clearing alert {alert_id}",
                            sa.and_(alerts.c.id == alert_id, alerts.c.cleared_utc_ns.is_(None)),
                            cleared_utc_ns=now_ns)

    def acknowledge(self, alert_id: int, user: str, now_ns: int) -> Alert | None:
        """Record that ``user`` acknowledged a standing, unacknowledged alert; an event alert
        (quarantine, revoked key) is cleared by it too. None when there was nothing to acknowledge."""
        found = self.get(alert_id)
        if found is None:
            return None
        values: dict[str, Any] = {"acknowledged_utc_ns": now_ns, "acknowledged_by": user}
        if found.kind in EVENTS:
            values["cleared_utc_ns"] = now_ns
        return self._update(f"acknowledging alert {alert_id}",
                            sa.and_(alerts.c.id == alert_id, alerts.c.cleared_utc_ns.is_(None),
                                    alerts.c.acknowledged_utc_ns.is_(None)), **values)

    def last_raised(self, kind: str) -> dict[str, int]:
        """Per unit, when an alert of ``kind`` was last raised."""
        query = sa.select(alerts.c.device_id, sa.func.max(alerts.c.raised_utc_ns)).where(
            alerts.c.kind == kind).group_by(alerts.c.device_id)
        with self._conn("reading when alerts were raised") as conn:
            return {str(d): int(t) for d, t in conn.execute(query)}

    def contacts(self) -> list[UnitFacts]:
        """Every unit's enrolment, revocation and last contact, without its status (cheap)."""
        d = devices.c
        query = sa.select(d.device_id, d.enrolled_utc_ns, d.revoked_utc_ns, d.last_heartbeat_utc_ns)
        with self._conn("reading when units were last heard from") as conn:
            return [UnitFacts(str(i), int(e), r is not None, None if h is None else int(h), None)
                    for i, e, r, h in conn.execute(query)]

    def latest_quarantines(self) -> dict[str, int]:
        """Per unit, when its newest quarantined upload was received."""
        query = sa.select(quarantine.c.device_id, sa.func.max(quarantine.c.received_utc_ns)).group_by(
            quarantine.c.device_id)
        with self._conn("reading quarantine times") as conn:
            return {str(d): int(t) for d, t in conn.execute(query)}
