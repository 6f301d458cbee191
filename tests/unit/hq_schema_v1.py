"""The index schema exactly as headquarters' first release created it (SQLite, PRAGMA user_version
1), frozen here so tests can make a data dir the old code would have made and upgrade it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

UPLOAD_STATES = ("receiving", "stored", "quarantined", "terminated")
OUTCOMES = ("ok", "refused", "failed", "quarantined", "duplicate")

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


def make_v1_index(path: Path) -> sqlite3.Connection:
    """A new index file with the first release's schema; the caller adds rows and closes it."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("BEGIN")
    for statement in _SCHEMA:
        conn.execute(statement)
    conn.execute("PRAGMA user_version=1")
    conn.execute("COMMIT")
    return conn
