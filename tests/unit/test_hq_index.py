"""The headquarters index: append-only audit and heartbeats, nonces, enrolment, storage rules."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from hq.db.retention import PruneLimits
from hq.index import HqIndexError, SqliteIndex
from hq.records import AuditRecord
from hq.storage import FileEvidenceStore, StorageError, UploadArea

T0_NS = 1_790_000_000_000_000_000


def record(event: str = "ingest", outcome: str = "ok") -> AuditRecord:
    return AuditRecord(T0_NS, "hq-api", event, "unit-1", "unit-1/0", outcome, {"why": "test"})


def test_audit_records_hold_every_cjis_field(tmp_path: Path) -> None:
    with SqliteIndex(tmp_path / "i.sqlite") as index:
        index.audit(record())
        [entry] = index.audit_log()
        assert (entry.utc_ns, entry.component, entry.event_type, entry.actor, entry.target, entry.outcome) == (
            T0_NS, "hq-api", "ingest", "unit-1", "unit-1/0", "ok",
        )  # fmt: skip
        assert entry.detail == {"why": "test"}
        with pytest.raises(HqIndexError):
            index.audit(record(outcome="maybe"))


def test_audit_and_heartbeats_refuse_update_and_delete_even_on_a_raw_connection(tmp_path: Path) -> None:
    """Heartbeats younger than the retention policy (hq_policy, read with the database's clock)
    are as untouchable as the audit log; tests/integration/test_hq_retention.py covers the rest."""
    path = tmp_path / "i.sqlite"
    with SqliteIndex(path) as index:
        index.audit(record())
        index.enroll("unit-1", "pem", "ab" * 32, T0_NS)
        index.add_heartbeat("unit-1", time.time_ns(), b"{}", {})
    raw = sqlite3.connect(path)
    try:
        for sql in (
            "UPDATE audit SET outcome = 'refused'",
            "DELETE FROM audit",
            "UPDATE heartbeats SET body = x'00'",
            "DELETE FROM heartbeats",
        ):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                raw.execute(sql)
    finally:
        raw.close()


def test_nonces_are_remembered_for_their_lifetime_and_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "i.sqlite"
    with SqliteIndex(path) as index:
        assert not index.nonce_seen("unit-1", "n1", 1000, 600)
        assert index.nonce_seen("unit-1", "n1", 1001, 600)
        assert not index.nonce_seen("unit-2", "n1", 1001, 600)
    with SqliteIndex(path) as index:
        assert index.nonce_seen("unit-1", "n1", 1600, 600)
        assert not index.nonce_seen("unit-1", "n1", 1601, 600)


def test_nonce_checks_delete_expired_nonces_now_and_then(tmp_path: Path) -> None:
    path = tmp_path / "i.sqlite"
    with SqliteIndex(path) as index:
        for n in range(5):
            assert not index.nonce_seen("unit-1", f"n{n}", 1000, 600)
        interval_s = PruneLimits().nonce_prune_interval_s
        assert not index.nonce_seen("unit-1", "later", 1000 + interval_s - 1, 600)
        raw = sqlite3.connect(path)
        try:
            assert raw.execute("SELECT count(*) FROM nonces").fetchone()[0] == 6  # within the interval
            assert not index.nonce_seen("unit-1", "last", 1601, 600)
            assert sorted(r[0] for r in raw.execute("SELECT nonce FROM nonces")) == ["last", "later"]
        finally:
            raw.close()


def test_the_index_file_is_private(tmp_path: Path) -> None:
    with SqliteIndex(tmp_path / "i.sqlite"):
        pass
    assert (tmp_path / "i.sqlite").stat().st_mode & 0o077 == 0


def test_evidence_is_never_overwritten(tmp_path: Path) -> None:
    store = FileEvidenceStore(tmp_path)
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"first")
    b.write_bytes(b"second")
    store.put("unit-1", 3, a)
    with pytest.raises(StorageError, match="already exists"):
        store.put("unit-1", 3, b)
    with store.get("unit-1", 3) as fh:
        assert fh.read() == b"first"
    assert b.exists() and not a.exists()
    # The same bytes again (a crash between storing and indexing): the move completes.
    again = tmp_path / "again"
    again.write_bytes(b"first")
    store.put("unit-1", 3, again)
    assert not again.exists()
    with pytest.raises(StorageError):
        store.put("../etc", 1, b)


def test_upload_area_appends_only_at_the_end(tmp_path: Path) -> None:
    area = UploadArea(tmp_path)
    uid = "0" * 32
    area.create(uid)
    assert area.append(uid, 0, b"abc") == 3
    with pytest.raises(StorageError, match="offset"):
        area.append(uid, 1, b"zz")
    assert area.size(uid) == 3
    with pytest.raises(StorageError):
        area.path("../../x")
