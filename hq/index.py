"""Headquarters' index: devices, uploads, evidence, quarantine, heartbeats, nonces and the audit log.

``Index`` is the interface the service uses; ``SqliteIndex`` implements it over one SQLite file
with sqlite-utils. PostgreSQL can take over later behind the same protocol.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

from agent.sqlitedb import SqliteFile
from hq.records import OUTCOMES, UPLOAD_STATES, AuditRecord, Device, Evidence, Quarantined, Upload


class HqIndexError(Exception):
    """An index operation failed or was refused; the message says what was being done."""


class Index(Protocol):
    """What the service needs from its index. Every method is one transaction; thread-safe."""

    def close(self) -> None: ...

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
    def set_receipt(self, device_id: str, seq: int, receipt: bytes) -> None: ...
    def add_quarantine(self, q: Quarantined) -> None: ...
    def quarantined(self, device_id: str | None = None) -> list[Quarantined]: ...

    # heartbeats and audit
    def add_heartbeat(self, device_id: str, now_ns: int, body: bytes, status: dict[str, Any]) -> None: ...
    def heartbeats(self, device_id: str) -> list[tuple[int, bytes]]: ...
    def audit(self, record: AuditRecord) -> None: ...
    def audit_log(self, event_type: str | None = None) -> list[AuditRecord]: ...


_SCHEMA = (
    """CREATE TABLE devices (
        device_id TEXT PRIMARY KEY,
        public_pem TEXT NOT NULL,
        fingerprint TEXT NOT NULL UNIQUE,
        enrolled_utc_ns INTEGER NOT NULL,
        revoked_utc_ns INTEGER,
        contiguous_through INTEGER NOT NULL DEFAULT -1,
        last_heartbeat_utc_ns INTEGER,
        last_status TEXT)""",
    """CREATE TABLE nonces (
        key_id TEXT NOT NULL, nonce TEXT NOT NULL, seen_s INTEGER NOT NULL,
        PRIMARY KEY (key_id, nonce))""",
    "CREATE INDEX nonces_age ON nonces (seen_s)",
    f"""CREATE TABLE uploads (
        upload_id TEXT PRIMARY KEY,
        device_id TEXT NOT NULL REFERENCES devices (device_id),
        seq INTEGER NOT NULL, filename TEXT NOT NULL, sha256 TEXT NOT NULL, length INTEGER NOT NULL,
        state TEXT NOT NULL CHECK (state IN {UPLOAD_STATES}),
        created_utc_ns INTEGER NOT NULL, updated_utc_ns INTEGER NOT NULL, result TEXT)""",
    "CREATE INDEX uploads_entry ON uploads (device_id, seq, sha256, state)",
    """CREATE TABLE evidence (
        device_id TEXT NOT NULL REFERENCES devices (device_id),
        seq INTEGER NOT NULL, kind TEXT NOT NULL, manifest_sha256 TEXT NOT NULL, prev TEXT NOT NULL,
        file_sha256 TEXT NOT NULL, size_bytes INTEGER NOT NULL,
        utc_start_ns INTEGER NOT NULL, utc_end_ns INTEGER NOT NULL, received_utc_ns INTEGER NOT NULL,
        status TEXT NOT NULL, location TEXT NOT NULL, upload_id TEXT NOT NULL,
        warnings TEXT NOT NULL DEFAULT '[]', receipt BLOB,
        PRIMARY KEY (device_id, seq))""",
    """CREATE TABLE quarantine (
        quarantine_id TEXT PRIMARY KEY, device_id TEXT NOT NULL, seq INTEGER, upload_id TEXT NOT NULL,
        file_sha256 TEXT NOT NULL, code TEXT NOT NULL, reason TEXT NOT NULL, location TEXT NOT NULL,
        received_utc_ns INTEGER NOT NULL)""",
    """CREATE TABLE heartbeats (
        id INTEGER PRIMARY KEY AUTOINCREMENT, device_id TEXT NOT NULL REFERENCES devices (device_id),
        received_utc_ns INTEGER NOT NULL, body BLOB NOT NULL)""",
    f"""CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        utc_ns INTEGER NOT NULL, component TEXT NOT NULL, event_type TEXT NOT NULL, actor TEXT NOT NULL,
        target TEXT NOT NULL, outcome TEXT NOT NULL CHECK (outcome IN {OUTCOMES}), detail TEXT NOT NULL)""",
    # Append-only even for someone holding a raw connection, not just through this API; the
    # heartbeats are proof too.
    "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END",
    "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END",
    "CREATE TRIGGER heartbeats_no_update BEFORE UPDATE ON heartbeats "
    "BEGIN SELECT RAISE(ABORT, 'heartbeats are append-only'); END",
    "CREATE TRIGGER heartbeats_no_delete BEFORE DELETE ON heartbeats "
    "BEGIN SELECT RAISE(ABORT, 'heartbeats are append-only'); END",
)
SCHEMA_VERSION = 2

# Version 2: the upload states complete, ingesting and expired (ingest off the request path,
# expiry of abandoned uploads). SQLite cannot alter a CHECK: the table is rebuilt.
_MIGRATE_1_TO_2 = (
    "ALTER TABLE uploads RENAME TO uploads_v1",
    _SCHEMA[3],
    "INSERT INTO uploads SELECT * FROM uploads_v1",
    "DROP TABLE uploads_v1",
    _SCHEMA[4],
)


def _device(row: dict[str, Any]) -> Device:
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


def _upload(row: dict[str, Any]) -> Upload:
    fields = dict(row)
    fields["result"] = None if row["result"] is None else json.loads(row["result"])
    return Upload(**fields)


def _evidence(row: dict[str, Any]) -> Evidence:
    fields = dict(row)
    fields["warnings"] = tuple(json.loads(row["warnings"]))
    fields["receipt"] = None if row["receipt"] is None else bytes(row["receipt"])
    return Evidence(**fields)


class SqliteIndex:
    """The index in one SQLite file (WAL, synchronous=FULL), created 0600 (:class:`agent.sqlitedb.SqliteFile`,
    as the unit's store).

    Thread contract: one connection guarded by one re-entrant lock held for each whole call, so
    the HTTP worker threads are serialised and each write is one transaction. Other processes
    (``bodycam-hq enroll`` while the service runs) use their own connection; SQLite's file
    locks and ``busy_timeout_s`` arbitrate between processes.
    """

    def __init__(self, path: Path, busy_timeout_s: float = 10.0) -> None:
        self.path = path
        self._file = SqliteFile(path, "index", HqIndexError, busy_timeout_s=busy_timeout_s)
        self._tx = self._file.transaction
        self._rows = self._file.rows
        try:
            with self._tx("creating the schema") as db:
                version = int(db.conn.execute("PRAGMA user_version").fetchone()[0])
                if version > SCHEMA_VERSION:
                    raise HqIndexError(f"index schema {version} is newer than this software ({SCHEMA_VERSION})")
                if version == 0:
                    for statement in _SCHEMA:
                        db.conn.execute(statement)
                elif version == 1:
                    for statement in _MIGRATE_1_TO_2:
                        db.conn.execute(statement)
                db.conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # -- devices --------------------------------------------------------------------------

    def enroll(self, device_id: str, public_pem: str, fingerprint: str, now_ns: int) -> None:
        with self._tx(f"enrolling {device_id}") as db:
            db.table("devices").insert(
                {
                    "device_id": device_id,
                    "public_pem": public_pem,
                    "fingerprint": fingerprint,
                    "enrolled_utc_ns": now_ns,
                }
            )

    def revoke(self, device_id: str, now_ns: int) -> bool:
        with self._tx(f"revoking {device_id}") as db:
            cur = db.conn.execute(
                "UPDATE devices SET revoked_utc_ns = ? WHERE device_id = ? AND revoked_utc_ns IS NULL",
                (now_ns, device_id),
            )
            return cur.rowcount == 1

    def device(self, device_id: str) -> Device | None:
        rows = self._rows("reading a device", "SELECT * FROM devices WHERE device_id = ?", (device_id,))
        return _device(rows[0]) if rows else None

    def devices(self) -> list[Device]:
        return [_device(r) for r in self._rows("listing devices", "SELECT * FROM devices ORDER BY device_id")]

    def device_by_fingerprint(self, fingerprint: str) -> Device | None:
        rows = self._rows("reading a device", "SELECT * FROM devices WHERE fingerprint = ?", (fingerprint,))
        return _device(rows[0]) if rows else None

    # -- nonces ---------------------------------------------------------------------------

    def nonce_seen(self, key_id: str, nonce: str, now_s: int, ttl_s: int) -> bool:
        with self._tx("recording a nonce") as db:
            db.conn.execute("DELETE FROM nonces WHERE seen_s < ?", (now_s - ttl_s,))
            cur = db.conn.execute(
                "INSERT OR IGNORE INTO nonces (key_id, nonce, seen_s) VALUES (?, ?, ?)", (key_id, nonce, now_s)
            )
            return cur.rowcount == 0

    # -- uploads --------------------------------------------------------------------------

    def add_upload(self, upload: Upload) -> None:
        row = {name: getattr(upload, name) for name in Upload.__slots__}
        row["result"] = None if upload.result is None else json.dumps(upload.result, sort_keys=True)
        with self._tx(f"creating upload {upload.upload_id}") as db:
            db.table("uploads").insert(row)

    def upload(self, upload_id: str) -> Upload | None:
        rows = self._rows("reading an upload", "SELECT * FROM uploads WHERE upload_id = ?", (upload_id,))
        return _upload(rows[0]) if rows else None

    def find_upload(self, device_id: str, seq: int, sha256: str, states: tuple[str, ...]) -> Upload | None:
        marks = ",".join("?" for _ in states)
        rows = self._rows(
            "finding an upload",
            f"SELECT * FROM uploads WHERE device_id = ? AND seq = ? AND sha256 = ? AND state IN ({marks}) "
            "ORDER BY created_utc_ns DESC LIMIT 1",
            (device_id, seq, sha256, *states),
        )
        return _upload(rows[0]) if rows else None

    def uploads(self, state: str) -> list[Upload]:
        rows = self._rows("listing uploads", "SELECT * FROM uploads WHERE state = ? ORDER BY created_utc_ns", (state,))
        return [_upload(r) for r in rows]

    def finish_upload(self, upload_id: str, state: str, result: dict[str, Any] | None, now_ns: int) -> None:
        text = None if result is None else json.dumps(result, sort_keys=True)
        with self._tx(f"finishing upload {upload_id}") as db:
            db.conn.execute(
                "UPDATE uploads SET state = ?, result = ?, updated_utc_ns = ? WHERE upload_id = ?",
                (state, text, now_ns, upload_id),
            )

    def move_upload(
        self, upload_id: str, from_state: str, to_state: str, now_ns: int, updated_before_ns: int | None = None
    ) -> bool:
        """Move an upload from ``from_state`` to ``to_state`` in one row update; False when it was
        not in ``from_state`` (or, with ``updated_before_ns``, was updated since): another worker
        or node got there first. This is how one node claims a completed upload for ingest."""
        sql = "UPDATE uploads SET state = ?, updated_utc_ns = ? WHERE upload_id = ? AND state = ?"
        params: tuple[Any, ...] = (to_state, now_ns, upload_id, from_state)
        if updated_before_ns is not None:
            sql, params = sql + " AND updated_utc_ns < ?", (*params, updated_before_ns)
        with self._tx(f"moving upload {upload_id} to {to_state}") as db:
            return db.conn.execute(sql, params).rowcount == 1

    # -- evidence -------------------------------------------------------------------------

    def add_evidence(self, evidence: Evidence) -> int:
        """Index a stored entry and advance the device's contiguous run; return that run's end."""
        row = {name: getattr(evidence, name) for name in Evidence.__slots__}
        row["warnings"] = json.dumps(list(evidence.warnings))
        with self._tx(f"indexing {evidence.device_id} seq {evidence.seq}") as db:
            db.table("evidence").insert(row)
            cur = db.conn.execute(
                "SELECT contiguous_through FROM devices WHERE device_id = ?", (evidence.device_id,)
            ).fetchone()
            through = int(cur[0])
            while db.conn.execute(
                "SELECT 1 FROM evidence WHERE device_id = ? AND seq = ?", (evidence.device_id, through + 1)
            ).fetchone():
                through += 1
            db.conn.execute(
                "UPDATE devices SET contiguous_through = ? WHERE device_id = ?", (through, evidence.device_id)
            )
            return through

    def evidence(self, device_id: str, seq: int) -> Evidence | None:
        rows = self._rows(
            "reading evidence", "SELECT * FROM evidence WHERE device_id = ? AND seq = ?", (device_id, seq)
        )
        return _evidence(rows[0]) if rows else None

    def evidence_list(
        self, device_id: str | None = None, from_ns: int | None = None, to_ns: int | None = None
    ) -> list[Evidence]:
        sql, params = "SELECT * FROM evidence WHERE 1", list[Any]()
        if device_id is not None:
            sql, params = sql + " AND device_id = ?", [*params, device_id]
        if from_ns is not None:
            sql, params = sql + " AND utc_end_ns >= ?", [*params, from_ns]
        if to_ns is not None:
            sql, params = sql + " AND utc_start_ns <= ?", [*params, to_ns]
        rows = self._rows("listing evidence", sql + " ORDER BY device_id, seq", tuple(params))
        return [_evidence(r) for r in rows]

    def chain_head(self, device_id: str) -> tuple[int, str] | None:
        rows = self._rows(
            "reading the chain head",
            "SELECT seq, manifest_sha256 FROM evidence WHERE device_id = ? ORDER BY seq DESC LIMIT 1",
            (device_id,),
        )
        return (int(rows[0]["seq"]), str(rows[0]["manifest_sha256"])) if rows else None

    def set_receipt(self, device_id: str, seq: int, receipt: bytes) -> None:
        with self._tx(f"storing the receipt of {device_id} seq {seq}") as db:
            db.conn.execute(
                "UPDATE evidence SET receipt = ? WHERE device_id = ? AND seq = ?", (receipt, device_id, seq)
            )

    def add_quarantine(self, q: Quarantined) -> None:
        with self._tx(f"indexing quarantined {q.quarantine_id}") as db:
            db.table("quarantine").insert({name: getattr(q, name) for name in Quarantined.__slots__})

    def quarantined(self, device_id: str | None = None) -> list[Quarantined]:
        if device_id is None:
            rows = self._rows("listing quarantine", "SELECT * FROM quarantine ORDER BY received_utc_ns")
        else:
            rows = self._rows(
                "listing quarantine",
                "SELECT * FROM quarantine WHERE device_id = ? ORDER BY received_utc_ns",
                (device_id,),
            )
        return [Quarantined(**r) for r in rows]

    # -- heartbeats and audit -------------------------------------------------------------

    def add_heartbeat(self, device_id: str, now_ns: int, body: bytes, status: dict[str, Any]) -> None:
        with self._tx(f"storing a heartbeat of {device_id}") as db:
            db.conn.execute(
                "INSERT INTO heartbeats (device_id, received_utc_ns, body) VALUES (?, ?, ?)", (device_id, now_ns, body)
            )
            db.conn.execute(
                "UPDATE devices SET last_heartbeat_utc_ns = ?, last_status = ? WHERE device_id = ?",
                (now_ns, json.dumps(status, sort_keys=True), device_id),
            )

    def heartbeats(self, device_id: str) -> list[tuple[int, bytes]]:
        rows = self._rows(
            "listing heartbeats",
            "SELECT received_utc_ns, body FROM heartbeats WHERE device_id = ? ORDER BY id",
            (device_id,),
        )
        return [(int(r["received_utc_ns"]), bytes(r["body"])) for r in rows]

    def audit(self, record: AuditRecord) -> None:
        with self._tx(f"auditing {record.event_type}") as db:
            db.conn.execute(
                "INSERT INTO audit (utc_ns, component, event_type, actor, target, outcome, detail) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    record.utc_ns,
                    record.component,
                    record.event_type,
                    record.actor,
                    record.target,
                    record.outcome,
                    json.dumps(record.detail, sort_keys=True),
                ),
            )

    def audit_log(self, event_type: str | None = None) -> list[AuditRecord]:
        if event_type is None:
            rows = self._rows("reading the audit log", "SELECT * FROM audit ORDER BY id")
        else:
            rows = self._rows(
                "reading the audit log", "SELECT * FROM audit WHERE event_type = ? ORDER BY id", (event_type,)
            )
        return [
            AuditRecord(
                utc_ns=r["utc_ns"],
                component=r["component"],
                event_type=r["event_type"],
                actor=r["actor"],
                target=r["target"],
                outcome=r["outcome"],
                detail=json.loads(r["detail"]),
                id=r["id"],
            )
            for r in rows
        ]
