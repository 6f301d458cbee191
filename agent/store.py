"""The unit's local evidence index: segments, the hash-chain head and the audit log, in SQLite."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, ParamSpec, Self, TypeVar

from sqlite_utils import Database

from agent.fsutil import no_room, retry_when_full
from hal.clock import Clock

P = ParamSpec("P")
R = TypeVar("R")

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


# MIGRATIONS[i] takes the schema from user_version i to i + 1. Append; never edit a released one.
MIGRATIONS: tuple[Migration, ...] = (_v1, _v2)


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


def _check_path(doing: str, path: str) -> None:
    if not path or Path(path).is_absolute() or ".." in Path(path).parts:
        raise StoreError(f"{doing}: path {path!r} is not relative to the data dir")


def _check_sha256(name: str, value: str | None, *, required: bool) -> None:
    if value is None and not required:
        return
    if value is None or not _SHA256_HEX.fullmatch(value):
        raise StoreError(f"{name} must be 64 lowercase hex digits, got {value!r}")


def _room_when_full(method: Callable[P, R]) -> Callable[P, R]:
    """A write that fails with SQLITE_FULL is rolled back whole; run it again after the store's
    ``make_room`` freed some space (see :func:`agent.fsutil.retry_when_full`)."""

    @functools.wraps(method)
    def write(*args: P.args, **kwargs: P.kwargs) -> R:
        store = args[0]
        assert isinstance(store, Store)
        return retry_when_full(lambda: method(*args, **kwargs), store._make_room)

    return write


class Store:
    """The local index of evidence on this unit, in one SQLite file (WAL, synchronous=FULL).

    Thread contract: one connection (``check_same_thread=False``) guarded by one re-entrant
    lock that every public method holds for its whole duration, so calls from the recorder,
    sync and console threads are serialised and each write is one transaction. Returned values
    are copies, safe to keep after the call. Other processes may read the file concurrently
    (WAL); the agent is the only writer. ``busy_timeout_s`` is how long a write waits for
    another process's lock before failing (0: fail at once). ``make_room`` is called (from the
    writing thread) when the disk is full, to free some space before the write is tried again;
    it returns False when it cannot (see :mod:`agent.reserve`).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        clock: Clock,
        *,
        busy_timeout_s: float = 5.0,
        migrations: Sequence[Migration] = MIGRATIONS,
        make_room: Callable[[], bool] = no_room,
    ) -> None:
        self.path = Path(path)
        self._clock = clock
        self._make_room = make_room
        self._lock = threading.RLock()
        self._db: Database | None = None
        # opening may create the WAL and its shared-memory index: on a full disk, make room first
        retry_when_full(lambda: self._open(busy_timeout_s, migrations), make_room)

    def _open(self, busy_timeout_s: float, migrations: Sequence[Migration]) -> None:
        try:
            # Create it 0600 before SQLite does; SQLite gives -wal and -shm the same mode.
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
            os.chmod(self.path, 0o600)
        except OSError as e:
            raise StoreError(f"Creating store {self.path}: {e.strerror}") from e
        try:
            conn = sqlite3.connect(self.path, timeout=busy_timeout_s, check_same_thread=False)
        except sqlite3.Error as e:
            raise StoreError(f"Opening store {self.path}: {e}") from e
        try:
            self._db = Database(conn, execute_plugins=False)
            self._configure()
            self._migrate(migrations)
        except BaseException as e:
            conn.close()
            self._db = None
            if isinstance(e, sqlite3.Error):
                raise StoreError(f"Opening store {self.path}: {e}") from e
            raise

    # ---- lifecycle ------------------------------------------------------------------------

    def _configure(self) -> None:
        db = self._conn_db()
        db.enable_wal()
        if db.journal_mode != "wal":
            raise StoreError(f"Opening store {self.path}: WAL refused (journal_mode={db.journal_mode})")
        db.conn.execute("PRAGMA synchronous=FULL")  # evidence index: durability over speed
        db.conn.execute("PRAGMA foreign_keys=ON")
        if db.conn.execute("PRAGMA foreign_keys").fetchone()[0] != 1:
            raise StoreError(f"Opening store {self.path}: SQLite without foreign key support")

    def _migrate(self, migrations: Sequence[Migration]) -> None:
        db = self._conn_db()
        version = self.schema_version()
        if version > len(migrations):
            raise StoreError(
                f"Opening store {self.path}: schema version {version} is newer than this software "
                f"({len(migrations)})"
            )
        for target, migration in enumerate(migrations[version:], start=version + 1):
            with self._transaction(f"Migrating store to schema {target}"):
                migration(db)
                db.conn.execute(f"PRAGMA user_version={target}")

    def close(self) -> None:
        """Close the connection; idempotent. Later calls raise :class:`StoreError`."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _conn_db(self) -> Database:
        if self._db is None:
            raise StoreError(f"Store {self.path} is closed")
        return self._db

    @contextlib.contextmanager
    def _transaction(self, doing: str) -> Iterator[Database]:
        """Hold the lock and one IMMEDIATE transaction: all of the block, or none of it."""
        with self._lock:
            db = self._conn_db()
            try:
                db.conn.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                except BaseException:
                    db.rollback()
                    raise
                db.conn.execute("COMMIT")
            except sqlite3.Error as e:
                db.rollback()
                raise StoreError(f"{doing}: {e}") from e

    @contextlib.contextmanager
    def _reading(self, doing: str) -> Iterator[Database]:
        with self._lock:
            db = self._conn_db()
            try:
                yield db
            except sqlite3.Error as e:
                raise StoreError(f"{doing}: {e}") from e

    def schema_version(self) -> int:
        with self._reading("Reading schema version") as db:
            return int(db.conn.execute("PRAGMA user_version").fetchone()[0])

    # ---- segments -------------------------------------------------------------------------

    @_room_when_full
    def open_segment(
        self, seq: int, kind: str, path: str, recording_id: str | None, mono_start_ns: int, utc_start_ns: int
    ) -> None:
        """Index a segment being written (state 'open'); ``path`` is relative to the data dir."""
        if kind not in KINDS:
            raise StoreError(f"Opening segment {seq}: kind {kind!r} is not one of {KINDS}")
        _check_path(f"Opening segment {seq}", path)
        now = self._clock.utc_ns()
        with self._transaction(f"Opening segment {seq}") as db:
            db.table("segments").insert({
                "seq": seq, "kind": kind, "path": path, "state": "open", "recording_id": recording_id,
                "mono_start_ns": mono_start_ns, "utc_start_ns": utc_start_ns,
                "created_utc_ns": now, "updated_utc_ns": now,
            })

    @_room_when_full
    def seal_segment(
        self,
        seq: int,
        *,
        device_id: str,
        boot_id: str,
        mono_end_ns: int,
        utc_end_ns: int,
        manifest_sha256: str,
        ciphertext_sha256: str,
        size_bytes: int,
        chunks: int,
        flags: Sequence[str] = (),
        marks: int = 0,
        priority: int = 0,
    ) -> None:
        """Seal an open segment and make its manifest the chain head, in one transaction."""
        _check_sha256("manifest_sha256", manifest_sha256, required=True)
        _check_sha256("ciphertext_sha256", ciphertext_sha256, required=True)
        now = self._clock.utc_ns()
        with self._transaction(f"Sealing segment {seq}") as db:
            updated = db.conn.execute(
                "UPDATE segments SET state='sealed', mono_end_ns=?, utc_end_ns=?, manifest_sha256=?,"
                " ciphertext_sha256=?, bytes=?, chunks=?, flags=?, marks=?, priority=?, updated_utc_ns=?"
                " WHERE seq=? AND state='open'",
                (mono_end_ns, utc_end_ns, manifest_sha256, ciphertext_sha256, size_bytes, chunks,
                 json.dumps(list(flags)), marks, priority, now, seq),
            ).rowcount
            if updated != 1:
                raise StoreError(f"Sealing segment {seq}: no open segment with that seq")
            self._advance_chain(db, device_id, seq, manifest_sha256, boot_id, now)

    def record_event_entry(
        self,
        seq: int,
        *,
        device_id: str,
        boot_id: str,
        path: str,
        recording_id: str | None,
        mono_ns: int,
        utc_ns: int,
        manifest_sha256: str,
        ciphertext_sha256: str | None = None,
        size_bytes: int = 0,
        chunks: int = 0,
        flags: Sequence[str] = (),
        marks: int = 0,
        priority: int = 0,
    ) -> None:
        """Index a sealed 'event' entry (a mark, a state change...) and make it the chain head."""
        self._record_sealed(
            "event", seq, device_id, boot_id,
            {"path": path, "recording_id": recording_id, "mono_start_ns": mono_ns, "mono_end_ns": mono_ns,
             "utc_start_ns": utc_ns, "utc_end_ns": utc_ns, "manifest_sha256": manifest_sha256,
             "ciphertext_sha256": ciphertext_sha256, "bytes": size_bytes, "chunks": chunks,
             "flags": json.dumps(list(flags)), "marks": marks, "priority": priority},
        )

    def record_segment_entry(
        self,
        seq: int,
        *,
        device_id: str,
        boot_id: str,
        path: str,
        recording_id: str | None,
        mono_start_ns: int,
        mono_end_ns: int,
        utc_start_ns: int,
        utc_end_ns: int,
        manifest_sha256: str,
        ciphertext_sha256: str,
        size_bytes: int,
        chunks: int,
        flags: Sequence[str] = (),
        marks: int = 0,
        priority: int = 0,
    ) -> None:
        """Index a segment sealed without an 'open' row (its seq is assigned at seal time) and
        make it the chain head: :meth:`open_segment` + :meth:`seal_segment` in one step."""
        _check_sha256("ciphertext_sha256", ciphertext_sha256, required=True)
        self._record_sealed(
            "segment", seq, device_id, boot_id,
            {"path": path, "recording_id": recording_id, "mono_start_ns": mono_start_ns,
             "mono_end_ns": mono_end_ns, "utc_start_ns": utc_start_ns, "utc_end_ns": utc_end_ns,
             "manifest_sha256": manifest_sha256, "ciphertext_sha256": ciphertext_sha256,
             "bytes": size_bytes, "chunks": chunks, "flags": json.dumps(list(flags)), "marks": marks,
             "priority": priority},
        )

    @_room_when_full
    def _record_sealed(self, kind: str, seq: int, device_id: str, boot_id: str, row: dict[str, Any]) -> None:
        doing = f"Recording {kind} entry {seq}"
        _check_sha256("manifest_sha256", row["manifest_sha256"], required=True)
        _check_sha256("ciphertext_sha256", row["ciphertext_sha256"], required=False)
        _check_path(doing, row["path"])
        now = self._clock.utc_ns()
        with self._transaction(doing) as db:
            db.table("segments").insert(
                {"seq": seq, "kind": kind, "state": "sealed", **row, "created_utc_ns": now, "updated_utc_ns": now}
            )
            self._advance_chain(db, device_id, seq, row["manifest_sha256"], boot_id, now)

    @_room_when_full
    def advance_chain(self, device_id: str, seq: int, head_hash: str, boot_id: str) -> None:
        """Move ``device_id``'s chain head to entry ``seq`` (which must be indexed) with hash
        ``head_hash``. The head only moves forward: ``seq`` must exceed the current head."""
        _check_sha256("head_hash", head_hash, required=True)
        now = self._clock.utc_ns()
        with self._transaction(f"Advancing chain of {device_id} to {seq}") as db:
            self._advance_chain(db, device_id, seq, head_hash, boot_id, now)

    def _advance_chain(self, db: Database, device_id: str, seq: int, head_hash: str, boot_id: str,
                       now: int) -> None:
        row = db.conn.execute("SELECT head_seq FROM chain WHERE device_id=?", (device_id,)).fetchone()
        if row is not None and seq <= row[0]:
            raise StoreError(f"Advancing chain of {device_id}: entry {seq} is not after head {row[0]}")
        db.conn.execute(
            "INSERT INTO chain (device_id, head_seq, head_hash, boot_id, updated_utc_ns) VALUES (?,?,?,?,?)"
            " ON CONFLICT (device_id) DO UPDATE SET head_seq=excluded.head_seq,"
            " head_hash=excluded.head_hash, boot_id=excluded.boot_id, updated_utc_ns=excluded.updated_utc_ns",
            (device_id, seq, head_hash, boot_id, now),
        )

    def chain_head(self, device_id: str) -> tuple[int, str] | None:
        """(seq, manifest hash) of the last chained entry, or None before the first."""
        with self._reading("Reading chain head") as db:
            row = db.conn.execute(
                "SELECT head_seq, head_hash FROM chain WHERE device_id=?", (device_id,)
            ).fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    def segment(self, seq: int) -> Segment | None:
        with self._reading(f"Reading segment {seq}") as db:
            rows = list(db.table("segments").rows_where("seq = ?", [seq]))
        return Segment.from_row(rows[0]) if rows else None

    def segments(self, state: str | None = None) -> list[Segment]:
        """All entries in seq order, or those in ``state``."""
        if state is not None and state not in SEGMENT_STATES:
            raise StoreError(f"Listing segments: unknown state {state!r}")
        where, args = ("state = ?", [state]) if state else (None, None)
        with self._reading("Listing segments") as db:
            rows = list(db.table("segments").rows_where(where, args, order_by="seq"))
        return [Segment.from_row(r) for r in rows]

    def pending_upload(self, limit: int | None = None) -> list[Segment]:
        """Sealed entries to upload: highest priority first, then oldest first."""
        with self._reading("Listing pending uploads") as db:
            rows = list(db.table("segments").rows_where(
                "state = 'sealed'", order_by="priority DESC, seq ASC", limit=limit))
        return [Segment.from_row(r) for r in rows]

    @_room_when_full
    def mark_state(self, seq: int, state: str, *, receipt: Mapping[str, Any] | None = None) -> None:
        """Move an entry along :data:`NEXT_STATES` (same state: no-op), storing ``receipt`` if given."""
        now = self._clock.utc_ns()
        with self._transaction(f"Marking segment {seq} {state}") as db:
            row = db.conn.execute("SELECT state FROM segments WHERE seq=?", (seq,)).fetchone()
            if row is None:
                raise StoreError(f"Marking segment {seq} {state}: no such segment")
            if state != row[0] and state not in NEXT_STATES[row[0]]:
                raise StoreError(f"Marking segment {seq} {state}: not allowed from {row[0]}")
            sets, args = "state=?, updated_utc_ns=?", [state, now]
            if receipt is not None:
                sets, args = sets + ", receipt=?", [*args, json.dumps(dict(receipt), sort_keys=True)]
            db.conn.execute(f"UPDATE segments SET {sets} WHERE seq=?", (*args, seq))

    @_room_when_full
    def set_upload_offset(self, seq: int, offset: int) -> None:
        """Record how many bytes of ``seq`` HQ has confirmed, so an upload resumes there."""
        now = self._clock.utc_ns()
        with self._transaction(f"Setting upload offset of {seq}") as db:
            updated = db.conn.execute(
                "UPDATE segments SET upload_offset=?, updated_utc_ns=? WHERE seq=? AND ? BETWEEN 0 AND bytes",
                (offset, now, seq, offset),
            ).rowcount
            if updated != 1:
                raise StoreError(f"Setting upload offset of {seq}: no such segment or {offset} out of range")

    # ---- local copies -----------------------------------------------------------------------

    def local_acknowledged(self) -> list[Segment]:
        """Acknowledged entries whose file is still on the unit, oldest (lowest seq) first."""
        with self._reading("Listing acknowledged local copies") as db:
            # Without INDEXED BY the planner picks segments_upload and walks every acknowledged row.
            rows = list(db.query(
                "SELECT * FROM segments INDEXED BY segments_local_acknowledged"
                " WHERE state = 'acknowledged' AND local_deleted_utc_ns IS NULL ORDER BY seq"))
        return [Segment.from_row(r) for r in rows]

    def chain_head_seqs(self) -> frozenset[int]:
        """The seq of every device's chain head (in practice one): entries whose file must stay,
        because :class:`agent.chainlog.ChainLog` finds the head from the newest file when the
        index is behind."""
        with self._reading("Reading chain heads") as db:
            return frozenset(int(r[0]) for r in db.conn.execute("SELECT head_seq FROM chain"))

    @_room_when_full
    def mark_deleted_local(self, seq: int, *, actor: str, **detail: Any) -> None:
        """Record that the file of entry ``seq`` was removed from the unit, and audit it
        (action 'delete-local', ``detail`` added to the record), in one transaction.

        Only an acknowledged entry with a receipt qualifies, once: anything else raises
        :class:`StoreError` and changes nothing. The row stays, as proof the entry existed.
        """
        doing = f"Marking segment {seq} deleted locally"
        utc_ns, mono_ns = self._clock.utc_ns(), self._clock.monotonic_ns()
        with self._transaction(doing) as db:
            row = db.conn.execute(
                "SELECT state, receipt, local_deleted_utc_ns, path, bytes FROM segments WHERE seq=?", (seq,)
            ).fetchone()
            if row is None:
                raise StoreError(f"{doing}: no such segment")
            state, receipt, deleted, path, size = row
            if state != "acknowledged" or receipt is None:
                raise StoreError(f"{doing}: it is {state}{'' if receipt else ' without a receipt'}, "
                                 "not acknowledged by headquarters")
            if deleted is not None:
                raise StoreError(f"{doing}: already marked deleted")
            db.conn.execute(
                "UPDATE segments SET local_deleted_utc_ns=?, updated_utc_ns=? WHERE seq=?", (utc_ns, utc_ns, seq)
            )
            self._insert_audit(db, utc_ns, mono_ns, actor, "delete-local", path, "ok",
                               {"seq": seq, "bytes": size, **detail})

    # ---- audit ----------------------------------------------------------------------------

    @_room_when_full
    def audit(self, actor: str, action: str, target: str, outcome: str, **detail: Any) -> int:
        """Append one audit record and return its id. There is no way to change or remove one."""
        if outcome not in OUTCOMES:
            raise StoreError(f"Auditing {action}: outcome {outcome!r} is not one of {OUTCOMES}")
        utc_ns, mono_ns = self._clock.utc_ns(), self._clock.monotonic_ns()
        with self._transaction(f"Auditing {action} by {actor}") as db:
            return self._insert_audit(db, utc_ns, mono_ns, actor, action, target, outcome, detail)

    @staticmethod
    def _insert_audit(db: Database, utc_ns: int, mono_ns: int, actor: str, action: str, target: str,
                      outcome: str, detail: Mapping[str, Any]) -> int:
        cursor = db.conn.execute(
            "INSERT INTO audit (utc_ns, mono_ns, actor, action, target, outcome, detail)"
            " VALUES (?,?,?,?,?,?,?)",
            (utc_ns, mono_ns, actor, action, target, outcome,
             json.dumps(dict(detail), sort_keys=True, default=str)),  # default=str: never fail to audit
        )
        return int(cursor.lastrowid or 0)

    def audit_tail(self, n: int) -> list[AuditEntry]:
        """The last ``n`` audit records, oldest first (n <= 0: none)."""
        if n <= 0:
            return []
        with self._reading("Reading audit log") as db:
            rows = db.conn.execute(
                "SELECT id, utc_ns, mono_ns, actor, action, target, outcome, detail FROM"
                " (SELECT * FROM audit ORDER BY id DESC LIMIT ?) ORDER BY id", (n,)
            ).fetchall()
        return [
            AuditEntry(id=i, utc_ns=utc, mono_ns=mono, actor=actor, action=action, target=target,
                       outcome=outcome, detail=json.loads(detail))
            for i, utc, mono, actor, action, target, outcome, detail in rows
        ]

    # ---- health ---------------------------------------------------------------------------

    def integrity_check(self) -> str:
        """SQLite's verdict on the file: "ok", or its list of problems one per line."""
        with self._reading("Checking store integrity") as db:
            rows = db.conn.execute("PRAGMA integrity_check").fetchall()
        return "\n".join(str(r[0]) for r in rows)

    def stats(self) -> dict[str, Any]:
        """Entry counts and bytes, in total and per state (every state present)."""
        with self._reading("Reading store stats") as db:
            rows = db.conn.execute(
                "SELECT state, count(*), coalesce(sum(bytes), 0) FROM segments GROUP BY state"
            ).fetchall()
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

    def get_status(self) -> dict[str, object]:
        """For the console and health report: the file, its schema and PRAGMAs, and :meth:`stats`."""
        with self._reading("Reading store status") as db:
            pragmas = {name: db.conn.execute(f"PRAGMA {name}").fetchone()[0]
                       for name in ("journal_mode", "synchronous", "foreign_keys")}
        return {"path": str(self.path), "schema_version": self.schema_version(), **pragmas, **self.stats()}
