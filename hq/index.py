"""Headquarters' index: devices, uploads, evidence, quarantine, heartbeats, nonces and the audit log.

``Index`` is the interface the service uses; ``SqlIndex`` implements it once over SQLAlchemy 2
Core, on SQLite (the embedded default, ``SqliteIndex``) or PostgreSQL (the fleet). The schema is
``hq.db.schema`` and changes only through the migrations in ``hq/db/migrations``.
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, RowMapping

from hq.accounts.store import AccountStore
from hq.db import HqIndexError, retention, search, tx
from hq.db import migrate as migrations
from hq.db import requests as unit_requests
from hq.db.accounts import SqlAccountStore
from hq.db.chain import AUDIT_DOMAIN, GENESIS, ChainReport, ChainRow, ChainWalker, record_hash
from hq.db.engine import DEFAULT_NAME, make_engine, mask, parse_url
from hq.db.locks import DeviceLocks
from hq.db.recordings import note_entry, recording_of
from hq.db.retention import HeartbeatPolicy, PruneLimits
from hq.db.schema import audit as audit_t
from hq.db.schema import devices, evidence, heartbeats, nonces, quarantine, uploads
from hq.records import (
    OPEN_UPLOAD_STATES,
    AuditQuery,
    AuditRecord,
    Device,
    Evidence,
    Quarantined,
    RecordingFilter,
    RecordingSummary,
    UnitRequest,
    Upload,
)

__all__ = ["HqIndexError", "Index", "SqlIndex", "SqliteIndex", "open_index"]

# pg_advisory_xact_lock key ("bcaudit"): one chain, one writer at a time across nodes.
AUDIT_CHAIN_LOCK_KEY = 0x62_6361_7564_6974


class Index(Protocol):
    """What the service needs from its index. Every method is one transaction; thread-safe."""

    def close(self) -> None: ...
    def ping(self) -> None: ...

    # devices
    def enroll(self, device_id: str, public_pem: str, fingerprint: str, now_ns: int) -> None: ...
    def revoke(self, device_id: str, now_ns: int) -> bool: ...
    def device(self, device_id: str) -> Device | None: ...
    def devices(self) -> list[Device]: ...
    def device_by_fingerprint(self, fingerprint: str) -> Device | None: ...

    # replay protection
    def nonce_seen(self, key_id: str, nonce: str, now_s: int, ttl_s: int) -> bool: ...

    # uploads
    def add_upload(self, upload: Upload) -> None: ...
    def upload(self, upload_id: str) -> Upload | None: ...
    def find_upload(self, device_id: str, seq: int, sha256: str, states: tuple[str, ...]) -> Upload | None: ...
    def uploads(self, state: str) -> list[Upload]: ...
    def finish_upload(self, upload_id: str, state: str, result: dict[str, Any] | None, now_ns: int) -> None: ...
    def move_upload(
        self, upload_id: str, from_state: str, to_state: str, now_ns: int, updated_before_ns: int | None = None
    ) -> bool: ...

    # evidence
    def add_evidence(self, evidence: Evidence) -> int: ...
    def evidence(self, device_id: str, seq: int) -> Evidence | None: ...
    def evidence_list(
        self, device_id: str | None = None, from_ns: int | None = None, to_ns: int | None = None
    ) -> list[Evidence]: ...
    def chain_head(self, device_id: str) -> tuple[int, str] | None: ...
    def search_recordings(self, f: RecordingFilter) -> tuple[list[RecordingSummary], int]: ...
    def recording_entries(self, device_id: str, recording_id: str) -> list[Evidence]: ...
    def set_receipt(self, device_id: str, seq: int, receipt: bytes) -> None: ...
    def add_quarantine(self, q: Quarantined) -> None: ...
    def quarantined(self, device_id: str | None = None) -> list[Quarantined]: ...

    # heartbeats and audit
    def add_heartbeat(self, device_id: str, now_ns: int, body: bytes, status: dict[str, Any]) -> None: ...
    def heartbeats(self, device_id: str) -> list[tuple[int, bytes]]: ...
    def audit(self, record: AuditRecord) -> None: ...
    def audit_log(self, event_type: str | None = None) -> list[AuditRecord]: ...
    def audit_search(self, query: AuditQuery) -> list[AuditRecord]: ...
    def verify_audit(self, batch_rows: int = 1000) -> ChainReport: ...

    # requests to units (docs/sync-protocol.md, "Requests from headquarters")
    def add_request(self, request: UnitRequest) -> None: ...
    def take_requests(self, device_id: str, now_ns: int, redeliver_before_ns: int, limit: int) -> list[bytes]: ...
    def devices_with_requests(self, device_ids: list[str], now_ns: int, redeliver_before_ns: int) -> set[str]: ...
    def answer_request(self, request_id: str, outcome: str, result: bytes, now_ns: int) -> bool: ...
    def request(self, request_id: str) -> UnitRequest | None: ...
    def requests(self, device_id: str | None = None) -> list[UnitRequest]: ...

    # quotas, rate limits, expiry, retention and per-device serialisation
    def open_uploads(self, device_id: str) -> tuple[int, int]: ...
    def expired_uploads(self, older_than_ns: int) -> list[Upload]: ...
    def heartbeat_count_since(self, device_id: str, since_ns: int) -> int: ...
    def device_lock(self, device_id: str, timeout_s: float | None = None) -> AbstractContextManager[None]: ...
    def prune(self, now_ns: int) -> dict[str, int]: ...

    # operations-room accounts (users, sessions, lockout), in the same database
    def accounts(self) -> AccountStore: ...


def _device(row: RowMapping) -> Device:
    status = row["last_status"]
    return Device(
        device_id=row["device_id"],
        public_pem=row["public_pem"],
        fingerprint=row["fingerprint"],
        enrolled_utc_ns=row["enrolled_utc_ns"],
        revoked_utc_ns=row["revoked_utc_ns"],
        contiguous_through=row["contiguous_through"],
        last_heartbeat_utc_ns=row["last_heartbeat_utc_ns"],
        last_status=None if status is None else json.loads(status),
    )


def _upload(row: RowMapping) -> Upload:
    fields = {name: row[name] for name in Upload.__slots__}
    fields["result"] = None if row["result"] is None else json.loads(row["result"])
    return Upload(**fields)


def _evidence(row: RowMapping) -> Evidence:
    fields = {name: row[name] for name in Evidence.__slots__}
    fields["warnings"] = tuple(json.loads(row["warnings"]))
    fields["receipt"] = None if row["receipt"] is None else bytes(row["receipt"])
    return Evidence(**fields)


def _audit_record(r: RowMapping) -> AuditRecord:
    return AuditRecord(utc_ns=r["utc_ns"], component=r["component"], event_type=r["event_type"], actor=r["actor"],
                       target=r["target"], outcome=r["outcome"], detail=json.loads(r["detail"]), id=r["id"],
                       prev_sha256=r["prev_sha256"], sha256=r["sha256"])


class SqlIndex:
    """The index over one SQLAlchemy engine, SQLite or PostgreSQL.

    Thread contract: thread-safe; each call takes a pooled connection for one transaction.
    Writes on SQLite begin IMMEDIATE (the file's writer lock up front; other writers, in this
    process or another, wait up to the busy timeout). On PostgreSQL several nodes share the
    database; what must not interleave across nodes takes a database lock (see each method).

    ``limits``: the periodic prune's nonce lifetime, abandoned-upload age and batch size.
    ``auto_migrate``: bring a database that is behind to this software's schema on opening (the
    embedded default); otherwise such a database is refused with the ``bodycam-hq migrate``
    command to run (``url_option`` is that command's option naming the database).
    """

    def __init__(self, engine: Engine, *, auto_migrate: bool = False, url_option: str = "",
                 limits: PruneLimits | None = None) -> None:
        self.engine = engine
        self.limits = limits or PruneLimits()
        self._writer = tx.writer(engine)
        self._locks = DeviceLocks(engine)
        self._next_nonce_prune_s = 0
        try:
            if auto_migrate:
                current, head = migrations.status(engine)
                if current != head:
                    migrations.upgrade(engine)
            else:
                migrations.require_current(engine, url_option)
        except BaseException:
            engine.dispose()
            raise

    @classmethod
    def open(cls, url: str, *, auto_migrate: bool = False, busy_timeout_s: float = 10.0) -> SqlIndex:
        engine = make_engine(parse_url(url), busy_timeout_s)
        return cls(engine, auto_migrate=auto_migrate, url_option=f"--database-url {mask(url)}")

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> None:
        """One round trip to the database (``/readyz``); HqIndexError when it does not answer."""
        self._one("reaching the index", sa.select(sa.literal(1)))

    def accounts(self) -> AccountStore:
        """The operations room's users and sessions, over this index's engine (hq/db/accounts.py)."""
        return SqlAccountStore(self.engine)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _write(self, doing: str) -> AbstractContextManager[Connection]:
        """One write transaction: all of the block, or none of it."""
        return tx.transaction(self._writer, doing, write=True)

    def _rows(self, doing: str, query: sa.Executable) -> list[RowMapping]:
        return tx.rows(self.engine, doing, query)

    def _one(self, doing: str, query: sa.Executable) -> tuple[Any, ...]:
        """The single row of an aggregate query, as a tuple."""
        return tx.one(self.engine, doing, query)

    # -- devices --------------------------------------------------------------------------

    def enroll(self, device_id: str, public_pem: str, fingerprint: str, now_ns: int) -> None:
        with self._write(f"enrolling {device_id}") as conn:
            conn.execute(devices.insert().values(
                device_id=device_id, public_pem=public_pem, fingerprint=fingerprint, enrolled_utc_ns=now_ns))

    def revoke(self, device_id: str, now_ns: int) -> bool:
        with self._write(f"revoking {device_id}") as conn:
            cur = conn.execute(devices.update()
                               .where(devices.c.device_id == device_id, devices.c.revoked_utc_ns.is_(None))
                               .values(revoked_utc_ns=now_ns))
            return cur.rowcount == 1

    def device(self, device_id: str) -> Device | None:
        rows = self._rows("reading a device", devices.select().where(devices.c.device_id == device_id))
        return _device(rows[0]) if rows else None

    def devices(self) -> list[Device]:
        return [_device(r) for r in self._rows("listing devices", devices.select().order_by(devices.c.device_id))]

    def device_by_fingerprint(self, fingerprint: str) -> Device | None:
        rows = self._rows("reading a device", devices.select().where(devices.c.fingerprint == fingerprint))
        return _device(rows[0]) if rows else None

    # -- nonces ---------------------------------------------------------------------------

    def nonce_seen(self, key_id: str, nonce: str, now_s: int, ttl_s: int) -> bool:
        """Whether ``nonce`` was seen within ``ttl_s``; records it. One atomic statement on both
        engines (INSERT ... ON CONFLICT DO UPDATE ... WHERE expired), so two nodes checking the
        same nonce at once admit it exactly once. An expired nonce still in the table (not yet
        pruned) counts as fresh and is renewed. At most every ``limits.nonce_prune_interval_s`` a call
        also deletes one bounded batch of expired nonces (as :meth:`prune` does)."""
        with self._write("recording a nonce") as conn:
            stmt = _insert(conn)(nonces).values(key_id=key_id, nonce=nonce, seen_s=now_s)
            stmt = stmt.on_conflict_do_update(index_elements=[nonces.c.key_id, nonces.c.nonce],
                                              set_={"seen_s": stmt.excluded.seen_s},
                                              where=nonces.c.seen_s < now_s - ttl_s)
            seen = conn.execute(stmt.returning(nonces.c.nonce)).first() is not None
        if now_s >= self._next_nonce_prune_s:  # keeps the table bounded without the service's pass
            self._next_nonce_prune_s = now_s + self.limits.nonce_prune_interval_s
            with self._write("pruning nonces") as conn:
                retention.prune_nonces(conn, now_s, replace(self.limits, nonce_ttl_s=ttl_s))
        return not seen

    # -- uploads --------------------------------------------------------------------------

    def add_upload(self, upload: Upload) -> None:
        row = {name: getattr(upload, name) for name in Upload.__slots__}
        row["result"] = None if upload.result is None else json.dumps(upload.result, sort_keys=True)
        with self._write(f"creating upload {upload.upload_id}") as conn:
            conn.execute(uploads.insert().values(**row))

    def upload(self, upload_id: str) -> Upload | None:
        rows = self._rows("reading an upload", uploads.select().where(uploads.c.upload_id == upload_id))
        return _upload(rows[0]) if rows else None

    def find_upload(self, device_id: str, seq: int, sha256: str, states: tuple[str, ...]) -> Upload | None:
        u = uploads.c
        rows = self._rows("finding an upload", uploads.select().where(
            u.device_id == device_id, u.seq == seq, u.sha256 == sha256, u.state.in_(states),
        ).order_by(u.created_utc_ns.desc()).limit(1))
        return _upload(rows[0]) if rows else None

    def uploads(self, state: str) -> list[Upload]:
        rows = self._rows("listing uploads",
                          uploads.select().where(uploads.c.state == state).order_by(uploads.c.created_utc_ns))
        return [_upload(r) for r in rows]

    def finish_upload(self, upload_id: str, state: str, result: dict[str, Any] | None, now_ns: int) -> None:
        text = None if result is None else json.dumps(result, sort_keys=True)
        with self._write(f"finishing upload {upload_id}") as conn:
            conn.execute(uploads.update().where(uploads.c.upload_id == upload_id)
                         .values(state=state, result=text, updated_utc_ns=now_ns))

    def open_uploads(self, device_id: str) -> tuple[int, int]:
        """(open uploads, their declared bytes) of one unit: receiving, complete or ingesting
        (``OPEN_UPLOAD_STATES``), for quotas."""
        u = uploads.c
        count, declared = self._one("counting open uploads", sa.select(
            sa.func.count(), sa.func.coalesce(sa.func.sum(u.length), 0),
        ).select_from(uploads).where(u.device_id == device_id, u.state.in_(OPEN_UPLOAD_STATES)))
        return int(count), int(declared)

    def expired_uploads(self, older_than_ns: int) -> list[Upload]:
        """Uploads still receiving whose last byte came before ``older_than_ns``: abandoned."""
        rows = self._rows("listing abandoned uploads", uploads.select().where(
            uploads.c.state == "receiving", uploads.c.updated_utc_ns < older_than_ns,
        ).order_by(uploads.c.updated_utc_ns))
        return [_upload(r) for r in rows]

    def device_lock(self, device_id: str, timeout_s: float | None = None) -> AbstractContextManager[None]:
        """Hold ``device_id``'s chain lock for a ``with`` block (:class:`hq.db.locks.DeviceLocks`):
        PostgreSQL nodes take turns through an advisory lock, SQLite users through a file lock.
        ``timeout_s`` None waits; not acquired in time raises HqIndexError."""
        return self._locks.hold(device_id, timeout_s)

    def move_upload(
        self, upload_id: str, from_state: str, to_state: str, now_ns: int, updated_before_ns: int | None = None
    ) -> bool:
        """Move an upload from ``from_state`` to ``to_state`` in one row update; False when it was
        not in ``from_state`` (or, with ``updated_before_ns``, was updated since): another worker
        or node got there first. This is how one node claims a completed upload for ingest."""
        u = uploads.c
        query = uploads.update().where(u.upload_id == upload_id, u.state == from_state)
        if updated_before_ns is not None:
            query = query.where(u.updated_utc_ns < updated_before_ns)
        with self._write(f"moving upload {upload_id} to {to_state}") as conn:
            return conn.execute(query.values(state=to_state, updated_utc_ns=now_ns)).rowcount == 1

    # -- evidence -------------------------------------------------------------------------

    def add_evidence(self, evidence_: Evidence) -> int:
        """Index a stored entry and advance the device's contiguous run; return that run's end. The
        entry joins its recording (``hq.db.recordings``: an entry outside one is its own)."""
        row = {name: getattr(evidence_, name) for name in Evidence.__slots__}
        row["warnings"] = json.dumps(list(evidence_.warnings))
        device_id = evidence_.device_id
        with self._write(f"indexing {device_id} seq {evidence_.seq}") as conn:
            conn.execute(evidence.insert().values(**row))
            note_entry(conn, evidence_, recording_of(evidence_), evidence_.received_utc_ns)
            # the device row is locked (FOR UPDATE, PostgreSQL) so two nodes advance the run in turn
            through = int(conn.execute(sa.select(devices.c.contiguous_through)
                                       .where(devices.c.device_id == device_id).with_for_update()).scalar_one())
            held = sa.select(evidence.c.seq).where(evidence.c.device_id == device_id, evidence.c.seq > through)
            for (seq,) in conn.execute(held.order_by(evidence.c.seq)):
                if seq != through + 1:
                    break
                through = seq
            conn.execute(devices.update().where(devices.c.device_id == device_id).values(contiguous_through=through))
            return through

    def evidence(self, device_id: str, seq: int) -> Evidence | None:
        rows = self._rows("reading evidence",
                          evidence.select().where(evidence.c.device_id == device_id, evidence.c.seq == seq))
        return _evidence(rows[0]) if rows else None

    def evidence_list(
        self, device_id: str | None = None, from_ns: int | None = None, to_ns: int | None = None
    ) -> list[Evidence]:
        query = evidence.select()
        if device_id is not None:
            query = query.where(evidence.c.device_id == device_id)
        if from_ns is not None:
            query = query.where(evidence.c.utc_end_ns >= from_ns)
        if to_ns is not None:
            query = query.where(evidence.c.utc_start_ns <= to_ns)
        rows = self._rows("listing evidence", query.order_by(evidence.c.device_id, evidence.c.seq))
        return [_evidence(r) for r in rows]

    def search_recordings(self, f: RecordingFilter) -> tuple[list[RecordingSummary], int]:
        """One page of recordings the filter finds, newest first, and how many it finds in all."""
        rows = self._rows("searching recordings", search.recordings_page(f))
        total = self._rows("counting recordings", search.recordings_count(f))[0]
        return [search.summary(r) for r in rows], int(next(iter(total.values())))

    def recording_entries(self, device_id: str, recording_id: str) -> list[Evidence]:
        """Every held entry of one recording (its segments and the events during it), by seq."""
        query = evidence.select().where(evidence.c.device_id == device_id, evidence.c.recording_id == recording_id)
        return [_evidence(r) for r in self._rows("reading a recording", query.order_by(evidence.c.seq))]

    def chain_head(self, device_id: str) -> tuple[int, str] | None:
        rows = self._rows("reading the chain head", sa.select(evidence.c.seq, evidence.c.manifest_sha256)
                          .where(evidence.c.device_id == device_id).order_by(evidence.c.seq.desc()).limit(1))
        return (int(rows[0]["seq"]), str(rows[0]["manifest_sha256"])) if rows else None

    def set_receipt(self, device_id: str, seq: int, receipt: bytes) -> None:
        with self._write(f"storing the receipt of {device_id} seq {seq}") as conn:
            conn.execute(evidence.update().where(evidence.c.device_id == device_id, evidence.c.seq == seq)
                         .values(receipt=receipt))

    def add_quarantine(self, q: Quarantined) -> None:
        with self._write(f"indexing quarantined {q.quarantine_id}") as conn:
            conn.execute(quarantine.insert().values({name: getattr(q, name) for name in Quarantined.__slots__}))

    def quarantined(self, device_id: str | None = None) -> list[Quarantined]:
        query = quarantine.select()
        if device_id is not None:
            query = query.where(quarantine.c.device_id == device_id)
        rows = self._rows("listing quarantine", query.order_by(quarantine.c.received_utc_ns))
        return [Quarantined(**{name: r[name] for name in Quarantined.__slots__}) for r in rows]

    # -- requests to units ----------------------------------------------------------------

    def add_request(self, request: UnitRequest) -> None:
        with self._write(f"queueing request {request.request_id}") as conn:
            unit_requests.insert(conn, request)

    def take_requests(self, device_id: str, now_ns: int, redeliver_before_ns: int, limit: int) -> list[bytes]:
        """A unit's requests due for delivery (:func:`hq.db.requests.take_pending`), marked delivered."""
        with self._write(f"taking requests for {device_id}") as conn:
            return unit_requests.take_pending(conn, device_id, now_ns, redeliver_before_ns, limit)

    def devices_with_requests(self, device_ids: list[str], now_ns: int, redeliver_before_ns: int) -> set[str]:
        """Which of ``device_ids`` :meth:`take_requests` would hand something now (one read for
        every poll a node holds open)."""
        try:
            with self.engine.connect() as conn:
                return unit_requests.devices_due(conn, device_ids, now_ns, redeliver_before_ns)
        except sa.exc.SQLAlchemyError as exc:
            raise HqIndexError(f"looking for requests to deliver: {tx.reason(exc)}") from exc

    def answer_request(self, request_id: str, outcome: str, result: bytes, now_ns: int) -> bool:
        """Keep a unit's signed result; False if the request had one already (kept as it was)."""
        with self._write(f"keeping the result of request {request_id}") as conn:
            return unit_requests.answer(conn, request_id, outcome, result, now_ns)

    def request(self, request_id: str) -> UnitRequest | None:
        rows = self._rows("reading a request", unit_requests.select(request_id=request_id))
        return unit_requests.to_record(rows[0]) if rows else None

    def requests(self, device_id: str | None = None) -> list[UnitRequest]:
        return [unit_requests.to_record(r)
                for r in self._rows("listing requests", unit_requests.select(device_id=device_id))]

    # -- heartbeats and audit -------------------------------------------------------------

    def add_heartbeat(self, device_id: str, now_ns: int, body: bytes, status: dict[str, Any]) -> None:
        with self._write(f"storing a heartbeat of {device_id}") as conn:
            conn.execute(heartbeats.insert().values(device_id=device_id, received_utc_ns=now_ns, body=body))
            conn.execute(devices.update().where(devices.c.device_id == device_id).values(
                last_heartbeat_utc_ns=now_ns, last_status=json.dumps(status, sort_keys=True)))

    def heartbeats(self, device_id: str) -> list[tuple[int, bytes]]:
        rows = self._rows("listing heartbeats", sa.select(heartbeats.c.received_utc_ns, heartbeats.c.body)
                          .where(heartbeats.c.device_id == device_id).order_by(heartbeats.c.id))
        return [(int(r["received_utc_ns"]), bytes(r["body"])) for r in rows]

    def heartbeat_count_since(self, device_id: str, since_ns: int) -> int:
        """Heartbeats of one unit received at or after ``since_ns``: for rate limits."""
        (count,) = self._one("counting heartbeats", sa.select(sa.func.count()).select_from(heartbeats).where(
            heartbeats.c.device_id == device_id, heartbeats.c.received_utc_ns >= since_ns))
        return int(count)

    def heartbeat_policy(self) -> HeartbeatPolicy:
        try:
            with self.engine.connect() as conn:
                return retention.read_policy(conn)
        except sa.exc.SQLAlchemyError as exc:
            raise HqIndexError(f"reading the heartbeat policy: {tx.reason(exc)}") from exc

    def prune(self, now_ns: int) -> dict[str, int]:
        """One bounded retention pass (at most ``limits.batch_rows`` rows of each kind, each kind
        its own transaction): expired nonces deleted, heartbeats past the policy's age or count
        deleted, positions past the position retention stripped; abandoned uploads (receiving,
        untouched for ``limits.abandoned_upload_s``) counted, for the caller to expire with
        :meth:`expired_uploads`. Returns the counts; call again while any is at the batch size."""
        limits = self.limits
        with self._write("pruning nonces") as conn:
            nonces_deleted = retention.prune_nonces(conn, now_ns // retention.NS_PER_S, limits)
        policy = self.heartbeat_policy()
        with self._write("pruning heartbeats by age") as conn:
            aged = retention.prune_aged(conn, now_ns, policy, limits)
        with self._write("pruning heartbeats by count") as conn:
            over = retention.prune_over_count(conn, policy, limits)
        with self._write("stripping old positions") as conn:
            stripped = retention.strip_positions(conn, now_ns, policy, limits)
        (abandoned,) = self._one("counting abandoned uploads", sa.select(sa.func.count()).select_from(uploads).where(
            uploads.c.state == "receiving",
            uploads.c.updated_utc_ns < now_ns - limits.abandoned_upload_s * retention.NS_PER_S))
        return {"nonces_deleted": nonces_deleted, "heartbeats_deleted_by_age": aged,
                "heartbeats_deleted_by_count": over, "positions_stripped": stripped,
                "abandoned_uploads": int(abandoned)}

    def audit(self, record: AuditRecord) -> None:
        """Append one record to the audit log's hash chain (:meth:`append_chained`)."""
        self.append_chained(audit_t, AUDIT_CHAIN_LOCK_KEY, AUDIT_DOMAIN, record)

    def append_chained(self, table: sa.Table, lock_key: int, domain: bytes, record: AuditRecord) -> None:
        """Append ``record`` to a hash-chained, append-only table (the audit log, the custody
        ledger). Appends are serialised across nodes: PostgreSQL takes a transaction-scoped
        advisory lock (``lock_key``) before reading the chain head, SQLite's BEGIN IMMEDIATE
        already holds the only writer lock."""
        detail = json.dumps(record.detail, sort_keys=True)
        with self._write(f"recording {record.event_type} in {table.name}") as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(lock_key)))
            head = conn.execute(sa.select(table.c.sha256).order_by(table.c.id.desc()).limit(1)).scalar()
            prev = GENESIS if head is None else str(head)
            digest = record_hash(prev, record.utc_ns, record.component, record.event_type, record.actor,
                                 record.target, record.outcome, detail, domain)
            conn.execute(table.insert().values(
                utc_ns=record.utc_ns, component=record.component, event_type=record.event_type,
                actor=record.actor, target=record.target, outcome=record.outcome, detail=detail,
                prev_sha256=prev, sha256=digest))

    def audit_log(self, event_type: str | None = None) -> list[AuditRecord]:
        query = audit_t.select()
        if event_type is not None:
            query = query.where(audit_t.c.event_type == event_type)
        rows = self._rows("reading the audit log", query.order_by(audit_t.c.id))
        return [_audit_record(r) for r in rows]

    def audit_search(self, query: AuditQuery) -> list[AuditRecord]:
        """Records matching every given filter, newest first, at most ``query.limit``."""
        a = audit_t.c
        select = audit_t.select()
        if query.actor:
            select = select.where(a.actor == query.actor)
        if query.target:
            select = select.where(sa.or_(a.target == query.target,
                                         a.target.startswith(query.target.rstrip("/") + "/", autoescape=True)))
        if query.event_type:
            select = select.where(a.event_type == query.event_type)
        if query.from_ns is not None:
            select = select.where(a.utc_ns >= query.from_ns)
        if query.to_ns is not None:
            select = select.where(a.utc_ns <= query.to_ns)
        if query.before_id is not None:
            select = select.where(a.id < query.before_id)
        rows = self._rows("searching the audit log", select.order_by(a.id.desc()).limit(max(1, query.limit)))
        return [_audit_record(r) for r in rows]

    def verify_audit(self, batch_rows: int = 1000) -> ChainReport:
        """Walk the audit chain from its first record, ``batch_rows`` at a time; the first broken
        link, or the count and head hash of an intact chain."""
        return self.verify_chained(audit_t, ChainWalker(), batch_rows)

    def verify_chained(self, table: sa.Table, walker: ChainWalker, batch_rows: int = 1000) -> ChainReport:
        """Feed ``table``'s rows to ``walker`` in id order, ``batch_rows`` at a time."""
        last_id = -1
        while True:
            rows = self._rows(f"verifying the {table.name} chain", table.select().where(table.c.id > last_id)
                              .order_by(table.c.id).limit(batch_rows))
            if not rows:
                return walker.report()
            if not walker.feed(ChainRow(**{name: r[name] for name in ChainRow.__slots__}) for r in rows):
                return walker.report()
            last_id = rows[-1]["id"]


def _insert(conn: Connection) -> Any:
    """The dialect's INSERT (with ON CONFLICT) for ``conn``'s engine."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert


class SqliteIndex(SqlIndex):
    """The embedded index: one SQLite file (WAL, synchronous=FULL, created 0600), brought to this
    software's schema on opening (files made by the first release, schema version 1, included)."""

    def __init__(self, path: Path, busy_timeout_s: float = 10.0) -> None:
        self.path = path
        super().__init__(make_engine(parse_url(f"sqlite:///{path}"), busy_timeout_s), auto_migrate=True)


def open_index(data_dir: Path, database_url: str | None = None) -> SqlIndex:
    """The index of ``data_dir``: its SQLite file (migrated on opening) unless ``database_url``
    names another database, which must already be migrated (``bodycam-hq migrate``)."""
    if database_url is None:
        return SqliteIndex(data_dir / DEFAULT_NAME)
    return SqlIndex.open(database_url)
