"""The unit's local evidence index: segments, the hash-chain head and the audit log, in SQLite."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from sqlite_utils import Database

from agent.fsutil import no_room, retry_when_full, room_when_full
from agent.sqlitedb import SqliteFile
from agent.storeschema import (
    KINDS,
    MIGRATIONS,
    NEXT_STATES,
    OUTCOMES,
    RING_COLUMNS,
    SEGMENT_STATES,
    AuditEntry,
    Migration,
    RingEntry,
    Segment,
    StoreError,
    advance_chain,
    check_path,
    check_sha256,
    count_entries,
    insert_audit,
)
from hal.clock import Clock

__all__ = ["AuditEntry", "KINDS", "MIGRATIONS", "Migration", "NEXT_STATES", "OUTCOMES", "SEGMENT_STATES",
           "RingEntry", "Segment", "Store", "StoreError", "check_path", "check_sha256"]


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
        # opening may create the WAL and its shared-memory index: on a full disk, make room first
        self._file = retry_when_full(lambda: self._open(busy_timeout_s, migrations), make_room)
        self._lock = self._file.lock
        self._transaction = self._file.transaction
        self._reading = self._file.reading

    def _open(self, busy_timeout_s: float, migrations: Sequence[Migration]) -> SqliteFile:
        file = SqliteFile(self.path, "store", StoreError, busy_timeout_s=busy_timeout_s)
        try:
            self._migrate(file, migrations)
        except BaseException:
            file.close()
            raise
        return file

    def _migrate(self, file: SqliteFile, migrations: Sequence[Migration]) -> None:
        version = file.user_version()
        if version > len(migrations):
            raise StoreError(
                f"Opening store {self.path}: schema version {version} is newer than this software "
                f"({len(migrations)})"
            )
        for target, migration in enumerate(migrations[version:], start=version + 1):
            with file.transaction(f"Migrating store to schema {target}") as db:
                migration(db)
                db.conn.execute(f"PRAGMA user_version={target}")

    def close(self) -> None:
        """Close the connection; idempotent. Later calls raise :class:`StoreError`."""
        self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def schema_version(self) -> int:
        return self._file.user_version()

    # ---- segments -------------------------------------------------------------------------

    @room_when_full
    def open_segment(
        self, seq: int, kind: str, path: str, recording_id: str | None, mono_start_ns: int, utc_start_ns: int
    ) -> None:
        """Index a segment being written (state 'open'); ``path`` is relative to the data dir."""
        if kind not in KINDS:
            raise StoreError(f"Opening segment {seq}: kind {kind!r} is not one of {KINDS}")
        check_path(f"Opening segment {seq}", path)
        now = self._clock.utc_ns()
        with self._transaction(f"Opening segment {seq}") as db:
            db.table("segments").insert({
                "seq": seq, "kind": kind, "path": path, "state": "open", "recording_id": recording_id,
                "mono_start_ns": mono_start_ns, "utc_start_ns": utc_start_ns,
                "created_utc_ns": now, "updated_utc_ns": now,
            })

    @room_when_full
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
        check_sha256("manifest_sha256", manifest_sha256, required=True)
        check_sha256("ciphertext_sha256", ciphertext_sha256, required=True)
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
        check_sha256("ciphertext_sha256", ciphertext_sha256, required=True)
        self._record_sealed(
            "segment", seq, device_id, boot_id,
            {"path": path, "recording_id": recording_id, "mono_start_ns": mono_start_ns,
             "mono_end_ns": mono_end_ns, "utc_start_ns": utc_start_ns, "utc_end_ns": utc_end_ns,
             "manifest_sha256": manifest_sha256, "ciphertext_sha256": ciphertext_sha256,
             "bytes": size_bytes, "chunks": chunks, "flags": json.dumps(list(flags)), "marks": marks,
             "priority": priority},
        )

    @room_when_full
    def _record_sealed(self, kind: str, seq: int, device_id: str, boot_id: str, row: dict[str, Any]) -> None:
        doing = f"Recording {kind} entry {seq}"
        check_sha256("manifest_sha256", row["manifest_sha256"], required=True)
        check_sha256("ciphertext_sha256", row["ciphertext_sha256"], required=False)
        check_path(doing, row["path"])
        now = self._clock.utc_ns()
        with self._transaction(doing) as db:
            db.table("segments").insert(
                {"seq": seq, "kind": kind, "state": "sealed", **row, "created_utc_ns": now, "updated_utc_ns": now}
            )
            self._advance_chain(db, device_id, seq, row["manifest_sha256"], boot_id, now)

    @room_when_full
    def advance_chain(self, device_id: str, seq: int, head_hash: str, boot_id: str) -> None:
        """Move ``device_id``'s chain head to entry ``seq`` (which must be indexed) with hash
        ``head_hash``. The head only moves forward: ``seq`` must exceed the current head."""
        check_sha256("head_hash", head_hash, required=True)
        now = self._clock.utc_ns()
        with self._transaction(f"Advancing chain of {device_id} to {seq}") as db:
            self._advance_chain(db, device_id, seq, head_hash, boot_id, now)

    @staticmethod
    def _advance_chain(db: Database, *args: Any) -> None:
        advance_chain(db, *args)  # a seam: tests fail it to prove sealing and chaining are one transaction

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

    @room_when_full
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

    @room_when_full
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

    @room_when_full
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
            insert_audit(db, utc_ns, mono_ns, actor, "delete-local", path, "ok",
                               {"seq": seq, "bytes": size, **detail})

    # ---- requests from headquarters --------------------------------------------------------

    def hq_request_result(self, request_id: str) -> bytes | None:
        """The signed result kept for a request this unit already answered, or None."""
        with self._reading("Reading a request from headquarters") as db:
            row = db.conn.execute("SELECT result FROM hq_requests WHERE request_id = ?", (request_id,)).fetchone()
        return None if row is None else bytes(row[0])

    @room_when_full
    def keep_hq_request(self, request_id: str, kind: str, expires_utc_ns: int, outcome: str, result: bytes) -> bool:
        """Keep the signed result of a request (once: False when the id was answered before)."""
        with self._transaction(f"Keeping the result of request {request_id}") as db:
            cur = db.conn.execute(
                "INSERT OR IGNORE INTO hq_requests (request_id, kind, expires_utc_ns, outcome, result,"
                " received_utc_ns) VALUES (?, ?, ?, ?, ?, ?)",
                (request_id, kind, expires_utc_ns, outcome, result, self._clock.utc_ns()))
            return cur.rowcount == 1

    def unposted_hq_results(self, limit: int = 16) -> list[tuple[str, bytes]]:
        """(request id, signed result) of answers headquarters has not taken yet, oldest first."""
        with self._reading("Listing unsent request results") as db:
            rows = db.conn.execute("SELECT request_id, result FROM hq_requests WHERE posted_utc_ns IS NULL"
                                   " ORDER BY received_utc_ns LIMIT ?", (limit,)).fetchall()
        return [(str(r), bytes(b)) for r, b in rows]

    @room_when_full
    def hq_result_posted(self, request_id: str) -> None:
        with self._transaction(f"Marking the result of request {request_id} sent") as db:
            db.conn.execute("UPDATE hq_requests SET posted_utc_ns = ? WHERE request_id = ?",
                            (self._clock.utc_ns(), request_id))

    # ---- the background ring (agent.background) -------------------------------------------

    def ring_head(self) -> tuple[int, str] | None:
        """(seq, chain hash) of the newest ring entry ever sealed, or None."""
        with self._reading("Reading the background ring's head") as db:
            row = db.conn.execute("SELECT seq, manifest_sha256 FROM background_ring ORDER BY seq DESC LIMIT 1"
                                  ).fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    @room_when_full
    def add_ring_entry(self, entry: RingEntry) -> None:
        with self._transaction(f"Indexing background ring entry {entry.seq}") as db:
            db.table("background_ring").insert({**dataclasses.asdict(entry), "created_utc_ns": self._clock.utc_ns()})

    def ring_entries(self, from_utc_ns: int = 0, to_utc_ns: int = 2**63 - 1) -> list[RingEntry]:
        """Ring entries still on disk that overlap [from, to) (touching is not overlapping), oldest first."""
        with self._reading("Listing the background ring") as db:
            rows = db.conn.execute(
                f"SELECT {', '.join(RING_COLUMNS)} FROM background_ring WHERE deleted_utc_ns IS NULL"
                " AND utc_end_ns > ? AND utc_start_ns < ? ORDER BY seq", (from_utc_ns, to_utc_ns)).fetchall()
        return [RingEntry(*r) for r in rows]

    def ring_stats(self) -> tuple[int, int, int | None, int | None]:
        """(entries, bytes, UTC start of the oldest, UTC end of the newest) of the ring on disk."""
        with self._reading("Summing up the background ring") as db:
            row = db.conn.execute("SELECT count(*), coalesce(sum(bytes), 0), min(utc_start_ns), max(utc_end_ns)"
                                  " FROM background_ring WHERE deleted_utc_ns IS NULL").fetchone()
        return int(row[0]), int(row[1]), row[2], row[3]

    def ring_deleted(self, seq: int) -> None:
        with self._transaction(f"Marking background ring entry {seq} removed") as db:
            db.conn.execute("UPDATE background_ring SET deleted_utc_ns = ? WHERE seq = ?", (self._clock.utc_ns(), seq))

    # ---- audit ----------------------------------------------------------------------------

    @room_when_full
    def audit(self, actor: str, action: str, target: str, outcome: str, **detail: Any) -> int:
        """Append one audit record and return its id. There is no way to change or remove one."""
        if outcome not in OUTCOMES:
            raise StoreError(f"Auditing {action}: outcome {outcome!r} is not one of {OUTCOMES}")
        utc_ns, mono_ns = self._clock.utc_ns(), self._clock.monotonic_ns()
        with self._transaction(f"Auditing {action} by {actor}") as db:
            return insert_audit(db, utc_ns, mono_ns, actor, action, target, outcome, detail)

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
            return count_entries(db)

    def get_status(self) -> dict[str, object]:
        """For the console and health report: the file, its schema and PRAGMAs, and :meth:`stats`."""
        with self._reading("Reading store status") as db:
            pragmas = {name: db.conn.execute(f"PRAGMA {name}").fetchone()[0]
                       for name in ("journal_mode", "synchronous", "foreign_keys")}
        return {"path": str(self.path), "schema_version": self.schema_version(), **pragmas, **self.stats()}
