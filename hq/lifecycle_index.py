"""The lifecycle's state in the index: categories, recordings and their categories, cases, the
deletion queue and the custody ledger. ``LifecycleIndex`` is what the lifecycle service uses;
``SqlLifecycle`` implements it over the same database as ``hq.index.SqlIndex`` (SQLite or
PostgreSQL; the tables are revision 0010's). Every method is one transaction.

The database keeps the rules that matter even against a raw connection: a recording an open case
holds cannot be queued or deleted, nor any of its entries marked deleted (triggers), and the
custody ledger is append-only and hash-chained like the audit log.
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from hq.db import tx
from hq.db.chain import CUSTODY_DOMAIN, ChainReport, ChainWalker
from hq.db.recordings import assigned, read_categories, recording_key, refresh_retention
from hq.db.schema import case_evidence, cases, categories, evidence, recording_categories, recordings
from hq.db.schema import custody as custody_t
from hq.index import SqlIndex, _evidence
from hq.lifecycle import Category, LifecycleError, Recording
from hq.records import AuditRecord, Evidence

# pg_advisory_xact_lock key ("bccustody"): one ledger chain, one writer at a time across nodes.
CUSTODY_CHAIN_LOCK_KEY = 0x62_6363_7573_7464


@dataclass(frozen=True, slots=True)
class Case:
    case_id: str
    title: str
    state: str
    opened_by: str
    opened_utc_ns: int
    closed_by: str | None = None
    closed_utc_ns: int | None = None


class LifecycleIndex(Protocol):
    def categories(self) -> dict[str, Category]: ...
    def set_category(self, category: Category, now_ns: int) -> bool: ...
    def recording(self, device_id: str, recording_id: str) -> Recording | None: ...
    def recordings(self, device_id: str | None = None, state: str | None = None,
                   case_id: str | None = None) -> list[Recording]: ...
    def assign(self, device_id: str, recording_id: str, category: str, actor: str, now_ns: int) -> bool: ...
    def unassign(self, device_id: str, recording_id: str, category: str) -> bool: ...
    def open_case(self, case: Case) -> None: ...
    def case(self, case_id: str) -> Case | None: ...
    def cases(self) -> list[Case]: ...
    def add_to_case(self, case_id: str, device_id: str, recording_id: str, actor: str, now_ns: int) -> bool: ...
    def remove_from_case(self, case_id: str, device_id: str, recording_id: str) -> bool: ...
    def close_case(self, case_id: str, actor: str, now_ns: int) -> bool: ...
    def queue(self, device_id: str, recording_id: str, actor: str, reason: str, now_ns: int) -> bool: ...
    def restore(self, device_id: str, recording_id: str) -> bool: ...
    def begin_deletion(self, device_id: str, recording_id: str) -> bool: ...
    def entries(self, device_id: str, recording_id: str, deleted: bool = False) -> list[Evidence]: ...
    def mark_entry_deleted(self, device_id: str, seq: int, now_ns: int) -> None: ...
    def finish_deletion(self, device_id: str, recording_id: str, now_ns: int) -> None: ...
    def set_hold_applied(self, device_id: str, recording_id: str, on: bool) -> None: ...
    def due_for_queue(self, now_ns: int, limit: int) -> list[Recording]: ...
    def due_for_deletion(self, queued_before_ns: int, limit: int) -> list[Recording]: ...
    def holds_to_apply(self, limit: int) -> list[Recording]: ...
    def custody(self, record: AuditRecord) -> None: ...
    def custody_log(self, target_prefix: str | None = None) -> list[AuditRecord]: ...
    def verify_custody(self, batch_rows: int = 1000) -> ChainReport: ...
    def custody_head(self) -> tuple[int, str] | None: ...
    def custody_hash(self, record_id: int) -> str | None: ...


def _held_expr() -> sa.ColumnElement[bool]:
    r, ce, c = recordings.c, case_evidence.c, cases.c
    return sa.exists().where(ce.device_id == r.device_id, ce.recording_id == r.recording_id,
                             ce.case_id == c.case_id, c.state == "open")


def _case(row: RowMapping) -> Case:
    return Case(**{name: row[name] for name in Case.__slots__})


class SqlLifecycle:
    """The lifecycle tables over ``index``'s engine. Thread-safe as the index is."""

    def __init__(self, index: SqlIndex) -> None:
        self._index = index

    def _recording(self, conn: Connection, row: RowMapping) -> Recording:
        return Recording(
            device_id=row["device_id"], recording_id=row["recording_id"], recorded_utc_ns=row["recorded_utc_ns"],
            end_utc_ns=row["end_utc_ns"], entries=row["entries"], marks=row["marks"], state=row["state"],
            categories=assigned(conn, row["device_id"], row["recording_id"]), held=bool(row["held"]),
            queued_utc_ns=row["queued_utc_ns"], queued_by=row["queued_by"], queue_reason=row["queue_reason"],
            kept_by_restore=bool(row["kept_by_restore"]), deleted_utc_ns=row["deleted_utc_ns"],
            hold_applied=bool(row["hold_applied"]))

    def _select(self, doing: str, *where: Any, order: Any = None, limit: int | None = None) -> list[Recording]:
        query = sa.select(recordings, _held_expr().label("held")).where(*where)
        query = query.order_by(*(order if order is not None else (recordings.c.device_id,
                                                                  recordings.c.recorded_utc_ns)))
        if limit is not None:
            query = query.limit(limit)
        with self._read(doing) as conn:
            return [self._recording(conn, row) for row in conn.execute(query).mappings()]

    def _read(self, doing: str) -> AbstractContextManager[Connection]:
        return tx.transaction(self._index.engine, doing)

    # -- categories -----------------------------------------------------------------------

    def categories(self) -> dict[str, Category]:
        with self._read("reading the categories") as conn:
            return read_categories(conn)

    def set_category(self, category: Category, now_ns: int) -> bool:
        """Add or change a category (and recompute the retention of the recordings it decides);
        True if it was new."""
        c = categories.c
        with self._index._write(f"setting category {category.name}") as conn:
            if category.role is not None:
                conn.execute(categories.update().where(c.role == category.role, c.name != category.name)
                             .values(role=None))
            values = {"retention_s": category.retention_s, "role": category.role, "doc": category.doc,
                      "changed_utc_ns": now_ns}
            new = conn.execute(categories.update().where(c.name == category.name).values(**values)).rowcount == 0
            if new:
                conn.execute(categories.insert().values(name=category.name, **values))
            known = read_categories(conn)
            rc, r = recording_categories.c, recordings.c
            affected = sa.select(r.device_id, r.recording_id).where(r.state != "deleted")
            if category.role != "default":
                affected = affected.where(sa.exists().where(
                    rc.device_id == r.device_id, rc.recording_id == r.recording_id, rc.category == category.name))
            for device_id, recording_id in conn.execute(affected).all():
                refresh_retention(conn, device_id, recording_id, known)
            return new

    # -- recordings -----------------------------------------------------------------------

    def recording(self, device_id: str, recording_id: str) -> Recording | None:
        r = recordings.c
        found = self._select("reading a recording", r.device_id == device_id, r.recording_id == recording_id)
        return found[0] if found else None

    def recordings(self, device_id: str | None = None, state: str | None = None,
                   case_id: str | None = None) -> list[Recording]:
        r, ce = recordings.c, case_evidence.c
        where: list[Any] = []
        if device_id is not None:
            where.append(r.device_id == device_id)
        if state is not None:
            where.append(r.state == state)
        if case_id is not None:
            where.append(sa.exists().where(ce.case_id == case_id, ce.device_id == r.device_id,
                                           ce.recording_id == r.recording_id))
        return self._select("listing recordings", *where)

    def assign(self, device_id: str, recording_id: str, category: str, actor: str, now_ns: int) -> bool:
        """Assign ``category`` by a person: the ``marked`` role's category (awaiting review) goes,
        and a restore's keep ends (retention applies again). False if it was already assigned."""
        rc = recording_categories.c
        with self._index._write(f"assigning {category} to {device_id}/{recording_id}") as conn:
            self._require_recording(conn, device_id, recording_id)
            known = read_categories(conn)
            if category not in known:
                raise LifecycleError(f"no category {category!r}; known: {', '.join(sorted(known))}")
            have = assigned(conn, device_id, recording_id)
            marked = [c.name for c in known.values() if c.role == "marked" and c.name != category]
            conn.execute(recording_categories.delete().where(
                rc.device_id == device_id, rc.recording_id == recording_id, rc.category.in_(marked)))
            if category not in have:
                conn.execute(recording_categories.insert().values(
                    device_id=device_id, recording_id=recording_id, category=category, assigned_by=actor,
                    assigned_utc_ns=now_ns))
            self._reapply(conn, device_id, recording_id, known)
            return category not in have

    def unassign(self, device_id: str, recording_id: str, category: str) -> bool:
        rc = recording_categories.c
        with self._index._write(f"removing {category} from {device_id}/{recording_id}") as conn:
            self._require_recording(conn, device_id, recording_id)
            gone = conn.execute(recording_categories.delete().where(
                rc.device_id == device_id, rc.recording_id == recording_id, rc.category == category)).rowcount
            self._reapply(conn, device_id, recording_id, read_categories(conn))
            return gone == 1

    def _reapply(self, conn: Connection, device_id: str, recording_id: str, known: dict[str, Category]) -> None:
        r = recordings.c
        conn.execute(recordings.update().where(r.device_id == device_id, r.recording_id == recording_id)
                     .values(kept_by_restore=False))
        refresh_retention(conn, device_id, recording_id, known)

    @staticmethod
    def _require_recording(conn: Connection, device_id: str, recording_id: str) -> str:
        r = recordings.c
        state = conn.execute(sa.select(r.state).where(r.device_id == device_id, r.recording_id == recording_id)
                             ).scalar()
        if state is None:
            raise LifecycleError(f"headquarters holds no recording {recording_id!r} of {device_id!r}")
        return str(state)

    # -- cases ------------------------------------------------------------------------------

    def open_case(self, case: Case) -> None:
        with self._index._write(f"opening case {case.case_id}") as conn:
            if conn.execute(sa.select(cases.c.case_id).where(cases.c.case_id == case.case_id)).first():
                raise LifecycleError(f"case {case.case_id!r} exists already")
            conn.execute(cases.insert().values(**{name: getattr(case, name) for name in Case.__slots__}))

    def case(self, case_id: str) -> Case | None:
        rows = self._index._rows("reading a case", cases.select().where(cases.c.case_id == case_id))
        return _case(rows[0]) if rows else None

    def cases(self) -> list[Case]:
        return [_case(r) for r in self._index._rows("listing cases", cases.select().order_by(cases.c.opened_utc_ns))]

    def add_to_case(self, case_id: str, device_id: str, recording_id: str, actor: str, now_ns: int) -> bool:
        """Put a recording in an open case (on legal hold from now on); one waiting in the deletion
        queue comes back out. Refused for a closed case or a recording being deleted or gone."""
        ce, r = case_evidence.c, recordings.c
        with self._index._write(f"adding {device_id}/{recording_id} to case {case_id}") as conn:
            state = conn.execute(sa.select(cases.c.state).where(cases.c.case_id == case_id)).scalar()
            if state != "open":
                raise LifecycleError(f"case {case_id!r} is {'not open' if state else 'unknown'}")
            rec_state = self._require_recording(conn, device_id, recording_id)
            if rec_state in ("deleting", "deleted"):
                raise LifecycleError(f"{device_id}/{recording_id} is {rec_state}: it cannot be held")
            if conn.execute(sa.select(ce.case_id).where(ce.case_id == case_id, ce.device_id == device_id,
                                                        ce.recording_id == recording_id)).first():
                return False
            conn.execute(case_evidence.insert().values(case_id=case_id, device_id=device_id,
                                                       recording_id=recording_id, added_by=actor, added_utc_ns=now_ns))
            conn.execute(recordings.update().where(r.device_id == device_id, r.recording_id == recording_id,
                                                   r.state == "queued")
                         .values(state="kept", queued_utc_ns=None, queued_by=None, queue_reason=None))
            return True

    def remove_from_case(self, case_id: str, device_id: str, recording_id: str) -> bool:
        ce = case_evidence.c
        with self._index._write(f"taking {device_id}/{recording_id} out of case {case_id}") as conn:
            return conn.execute(case_evidence.delete().where(
                ce.case_id == case_id, ce.device_id == device_id, ce.recording_id == recording_id)).rowcount == 1

    def close_case(self, case_id: str, actor: str, now_ns: int) -> bool:
        c = cases.c
        with self._index._write(f"closing case {case_id}") as conn:
            return conn.execute(cases.update().where(c.case_id == case_id, c.state == "open")
                                .values(state="closed", closed_by=actor, closed_utc_ns=now_ns)).rowcount == 1

    # -- the deletion queue -----------------------------------------------------------------

    def _move(self, doing: str, device_id: str, recording_id: str, from_states: tuple[str, ...],
              **values: Any) -> bool:
        r = recordings.c
        with self._index._write(doing) as conn:
            return conn.execute(recordings.update().where(
                r.device_id == device_id, r.recording_id == recording_id, r.state.in_(from_states)
            ).values(**values)).rowcount == 1

    def queue(self, device_id: str, recording_id: str, actor: str, reason: str, now_ns: int) -> bool:
        return self._move(f"queueing {device_id}/{recording_id} for deletion", device_id, recording_id, ("kept",),
                          state="queued", queued_utc_ns=now_ns, queued_by=actor, queue_reason=reason)

    def restore(self, device_id: str, recording_id: str) -> bool:
        return self._move(f"restoring {device_id}/{recording_id}", device_id, recording_id, ("queued",),
                          state="kept", queued_utc_ns=None, queued_by=None, queue_reason=None, kept_by_restore=True)

    def begin_deletion(self, device_id: str, recording_id: str) -> bool:
        return self._move(f"deleting {device_id}/{recording_id}", device_id, recording_id, ("queued",),
                          state="deleting")

    def finish_deletion(self, device_id: str, recording_id: str, now_ns: int) -> None:
        self._move(f"deleting {device_id}/{recording_id}", device_id, recording_id, ("deleting",),
                   state="deleted", deleted_utc_ns=now_ns)

    def entries(self, device_id: str, recording_id: str, deleted: bool = False) -> list[Evidence]:
        e = evidence.c
        query = evidence.select().where(e.device_id == device_id, recording_key(e) == recording_id)
        if not deleted:
            query = query.where(e.deleted_utc_ns.is_(None))
        return [_evidence(r) for r in self._index._rows("listing a recording's entries", query.order_by(e.seq))]

    def mark_entry_deleted(self, device_id: str, seq: int, now_ns: int) -> None:
        e = evidence.c
        with self._index._write(f"marking {device_id} seq {seq} deleted") as conn:
            conn.execute(evidence.update().where(e.device_id == device_id, e.seq == seq, e.deleted_utc_ns.is_(None))
                         .values(deleted_utc_ns=now_ns))

    def set_hold_applied(self, device_id: str, recording_id: str, on: bool) -> None:
        r = recordings.c
        with self._index._write(f"noting the store's hold on {device_id}/{recording_id}") as conn:
            conn.execute(recordings.update().where(r.device_id == device_id, r.recording_id == recording_id)
                         .values(hold_applied=on))

    def due_for_queue(self, now_ns: int, limit: int) -> list[Recording]:
        r = recordings.c
        return self._select("finding recordings past retention", r.state == "kept", r.kept_by_restore.is_(False),
                            r.retain_until_ns.is_not(None), r.retain_until_ns <= now_ns, ~_held_expr(),
                            order=(r.retain_until_ns,), limit=limit)

    def due_for_deletion(self, queued_before_ns: int, limit: int) -> list[Recording]:
        r = recordings.c
        return self._select("finding recordings due for deletion",
                            sa.or_(sa.and_(r.state == "queued", r.queued_utc_ns <= queued_before_ns),
                                   r.state == "deleting"), ~_held_expr(), order=(r.queued_utc_ns,), limit=limit)

    def holds_to_apply(self, limit: int) -> list[Recording]:
        r, held = recordings.c, _held_expr()
        return self._select("finding holds to apply", r.state != "deleted",
                            sa.or_(sa.and_(held, r.hold_applied.is_(False)), sa.and_(~held, r.hold_applied.is_(True))),
                            limit=limit)

    # -- the custody ledger -----------------------------------------------------------------

    def custody(self, record: AuditRecord) -> None:
        self._index.append_chained(custody_t, CUSTODY_CHAIN_LOCK_KEY, CUSTODY_DOMAIN, record)

    def custody_log(self, target_prefix: str | None = None) -> list[AuditRecord]:
        query = custody_t.select()
        if target_prefix is not None:
            query = query.where(custody_t.c.target.startswith(target_prefix, autoescape=True))
        rows = self._index._rows("reading the custody ledger", query.order_by(custody_t.c.id))
        return [AuditRecord(utc_ns=r["utc_ns"], component=r["component"], event_type=r["event_type"],
                            actor=r["actor"], target=r["target"], outcome=r["outcome"],
                            detail=json.loads(r["detail"]), id=r["id"],
                            prev_sha256=r["prev_sha256"], sha256=r["sha256"]) for r in rows]

    def verify_custody(self, batch_rows: int = 1000) -> ChainReport:
        return self._index.verify_chained(custody_t, ChainWalker(CUSTODY_DOMAIN, "custody record"), batch_rows)

    def custody_head(self) -> tuple[int, str] | None:
        """(id, sha256) of the ledger's last record, or None while it is empty."""
        rows = self._index._rows("reading the custody ledger's head", sa.select(custody_t.c.id, custody_t.c.sha256)
                                 .order_by(custody_t.c.id.desc()).limit(1))
        return (int(rows[0]["id"]), str(rows[0]["sha256"])) if rows else None

    def custody_hash(self, record_id: int) -> str | None:
        rows = self._index._rows("reading a custody record", sa.select(custody_t.c.sha256)
                                 .where(custody_t.c.id == record_id))
        return str(rows[0]["sha256"]) if rows else None
