"""The unit store's schema and records: segment states and their allowed moves, the SQLite
schema with its migrations, and the rows as dataclasses (see :mod:`agent.store`)."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlite_utils import Database

SEGMENT_STATES = ("open", "sealed", "uploading", "acknowledged", "quarantined")
KINDS = ("segment", "event")
OUTCOMES = ("ok", "refused", "failed")

# Which states mark_state may move a segment to. open -> sealed only via seal_segment, which
# also advances the chain; acknowledged and quarantined are final.
NEXT_STATES: dict[str, frozenset[str]] = {
    "open": frozenset({"quarantined"}),
    "sealed": frozenset({"uploading", "acknowledged", "quarantined"}),
    "uploading": frozenset({"sealed", "acknowledged", "quarantined"}),
    "acknowledged": frozenset(),
    "quarantined": frozenset(),
}

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")

Migration = Callable[[Database], None]

# Read by name, so a later migration adding a column does not break older readers.
_SEGMENT_COLUMNS = (
    "seq", "kind", "path", "state", "recording_id", "mono_start_ns", "mono_end_ns", "utc_start_ns",
    "utc_end_ns", "bytes", "chunks", "ciphertext_sha256", "manifest_sha256", "flags", "marks", "priority",
    "upload_offset", "receipt", "created_utc_ns", "updated_utc_ns", "local_deleted_utc_ns",
)


class StoreError(Exception):
    """A store operation failed; the message says what was being done."""


_SCHEMA_V1 = (
    f"""CREATE TABLE segments (
        seq INTEGER PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN {KINDS}),
        path TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN {SEGMENT_STATES}),
        recording_id TEXT,
        mono_start_ns INTEGER NOT NULL,
        mono_end_ns INTEGER,
        utc_start_ns INTEGER NOT NULL,
        utc_end_ns INTEGER,
        bytes INTEGER NOT NULL DEFAULT 0,
        chunks INTEGER NOT NULL DEFAULT 0,
        ciphertext_sha256 TEXT,
        manifest_sha256 TEXT,
        flags TEXT NOT NULL DEFAULT '[]',
        marks INTEGER NOT NULL DEFAULT 0,
        priority INTEGER NOT NULL DEFAULT 0,
        upload_offset INTEGER NOT NULL DEFAULT 0,
        receipt TEXT,
        created_utc_ns INTEGER NOT NULL,
        updated_utc_ns INTEGER NOT NULL)""",
    "CREATE INDEX segments_upload ON segments (state, priority DESC, seq)",
    """CREATE TABLE chain (
        device_id TEXT PRIMARY KEY,
        head_seq INTEGER NOT NULL REFERENCES segments (seq),
        head_hash TEXT NOT NULL,
        boot_id TEXT NOT NULL,
        updated_utc_ns INTEGER NOT NULL)""",
    f"""CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        utc_ns INTEGER NOT NULL,
        mono_ns INTEGER NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        outcome TEXT NOT NULL CHECK (outcome IN {OUTCOMES}),
        detail TEXT NOT NULL)""",
    # Append-only even for someone holding a raw connection, not just through this API.
    """CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END""",
    """CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END""",
)


def _v1(db: Database) -> None:
    for statement in _SCHEMA_V1:
        db.conn.execute(statement)


def _v2(db: Database) -> None:
    # When the file of an acknowledged entry was removed from the unit; the row itself stays.
    db.conn.execute("ALTER TABLE segments ADD COLUMN local_deleted_utc_ns INTEGER")
    # Retention's candidates, without scanning every acknowledged row of the unit's life.
    db.conn.execute(
        "CREATE INDEX segments_local_acknowledged ON segments (seq)"
        " WHERE state = 'acknowledged' AND local_deleted_utc_ns IS NULL"
    )


def _v3(db: Database) -> None:
    # Requests from headquarters this unit took (docs/sync-protocol.md, "Requests from
    # headquarters"): a request id seen again is answered with the kept result, never acted on
    # twice; ``posted_utc_ns`` stays NULL until headquarters took the result.
    db.conn.execute("""CREATE TABLE hq_requests (
        request_id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        expires_utc_ns INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        result BLOB NOT NULL,
        received_utc_ns INTEGER NOT NULL,
        posted_utc_ns INTEGER)""")
    db.conn.execute("CREATE INDEX hq_requests_unposted ON hq_requests (received_utc_ns) WHERE posted_utc_ns IS NULL")


def _v4(db: Database) -> None:
    # The background ring (agent/background): its own hash chain of low-resolution segments under
    # background/, kept by age and never uploaded as such; ``exported_seq`` is the chain entry a
    # request for its range made of it. Rows of rotated files stay with ``deleted_utc_ns`` set.
    db.conn.execute("""CREATE TABLE background_ring (
        seq INTEGER PRIMARY KEY,
        path TEXT NOT NULL,
        boot_id TEXT NOT NULL,
        mono_start_ns INTEGER NOT NULL,
        mono_end_ns INTEGER NOT NULL,
        utc_start_ns INTEGER NOT NULL,
        utc_end_ns INTEGER NOT NULL,
        manifest_sha256 TEXT NOT NULL,
        bytes INTEGER NOT NULL,
        created_utc_ns INTEGER NOT NULL,
        deleted_utc_ns INTEGER)""")
    db.conn.execute("CREATE INDEX background_ring_kept ON background_ring (utc_start_ns) WHERE deleted_utc_ns IS NULL")


# MIGRATIONS[i] takes the schema from user_version i to i + 1. Append; never edit a released one.
MIGRATIONS: tuple[Migration, ...] = (_v1, _v2, _v3, _v4)


@dataclass(frozen=True, slots=True)
class RingEntry:
    """One sealed segment of the background ring (``path`` relative to the data dir)."""

    seq: int
    path: str
    boot_id: str
    mono_start_ns: int
    mono_end_ns: int
    utc_start_ns: int
    utc_end_ns: int
    manifest_sha256: str
    bytes: int


RING_COLUMNS = tuple(f.name for f in dataclasses.fields(RingEntry))


@dataclass(frozen=True, slots=True)
class Segment:
    """One row of ``segments`` (column ``bytes`` is ``size_bytes`` here)."""

    seq: int
    kind: str
    path: str
    state: str
    recording_id: str | None
    mono_start_ns: int
    mono_end_ns: int | None
    utc_start_ns: int
    utc_end_ns: int | None
    size_bytes: int
    chunks: int
    ciphertext_sha256: str | None
    manifest_sha256: str | None
    flags: tuple[str, ...]
    marks: int
    priority: int
    upload_offset: int
    receipt: dict[str, Any] | None
    created_utc_ns: int
    updated_utc_ns: int
    local_deleted_utc_ns: int | None = None  # when its file was removed from the unit, if it was

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Segment:
        fields = {name: row[name] for name in _SEGMENT_COLUMNS}
        fields["size_bytes"] = fields.pop("bytes")
        fields["flags"] = tuple(json.loads(fields["flags"]))
        fields["receipt"] = None if fields["receipt"] is None else json.loads(fields["receipt"])
        return cls(**fields)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    utc_ns: int
    mono_ns: int
    actor: str
    action: str
    target: str
    outcome: str
    detail: dict[str, Any]


def check_path(doing: str, path: str) -> None:
    if not path or Path(path).is_absolute() or ".." in Path(path).parts:
        raise StoreError(f"{doing}: path {path!r} is not relative to the data dir")


def check_sha256(name: str, value: str | None, *, required: bool) -> None:
    if value is None and not required:
        return
    if value is None or not _SHA256_HEX.fullmatch(value):
        raise StoreError(f"{name} must be 64 lowercase hex digits, got {value!r}")


# ---- rows written and read inside the store's transactions --------------------------------


def advance_chain(db: Database, device_id: str, seq: int, head_hash: str, boot_id: str, now: int) -> None:
    """Inside a transaction: move ``device_id``'s chain head forward to ``seq``."""
    row = db.conn.execute("SELECT head_seq FROM chain WHERE device_id=?", (device_id,)).fetchone()
    if row is not None and seq <= row[0]:
        raise StoreError(f"Advancing chain of {device_id}: entry {seq} is not after head {row[0]}")
    db.conn.execute(
        "INSERT INTO chain (device_id, head_seq, head_hash, boot_id, updated_utc_ns) VALUES (?,?,?,?,?)"
        " ON CONFLICT (device_id) DO UPDATE SET head_seq=excluded.head_seq,"
        " head_hash=excluded.head_hash, boot_id=excluded.boot_id, updated_utc_ns=excluded.updated_utc_ns",
        (device_id, seq, head_hash, boot_id, now),
    )


def insert_audit(db: Database, utc_ns: int, mono_ns: int, actor: str, action: str, target: str,
                 outcome: str, detail: Mapping[str, Any]) -> int:
    """Inside a transaction: append one audit record; its id."""
    cursor = db.conn.execute(
        "INSERT INTO audit (utc_ns, mono_ns, actor, action, target, outcome, detail)"
        " VALUES (?,?,?,?,?,?,?)",
        (utc_ns, mono_ns, actor, action, target, outcome,
         json.dumps(dict(detail), sort_keys=True, default=str)),  # default=str: never fail to audit
    )
    return int(cursor.lastrowid or 0)


def count_entries(db: Database) -> dict[str, Any]:
    """Entry counts and bytes, in total and per state (every state present), and audit records."""
    rows = db.conn.execute("SELECT state, count(*), coalesce(sum(bytes), 0) FROM segments GROUP BY state").fetchall()
    audit_entries = db.conn.execute("SELECT count(*) FROM audit").fetchone()[0]
    by_state = {state: {"count": 0, "bytes": 0} for state in SEGMENT_STATES}
    for state, count, size in rows:
        by_state[state] = {"count": count, "bytes": size}
    return {
        "by_state": by_state,
        "count": sum(v["count"] for v in by_state.values()),
        "bytes": sum(v["bytes"] for v in by_state.values()),
        "audit_entries": audit_entries,
    }
