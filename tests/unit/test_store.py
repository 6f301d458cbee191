"""The local store on real SQLite: WAL, atomic seal + chain advance, upload order, audit log."""

from __future__ import annotations

import sqlite3
import stat
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlite_utils import Database

from agent.store import MIGRATIONS, NEXT_STATES, SEGMENT_STATES, Store, StoreError
from tests.fakes import FakeClock

DEV = "unit-7"
BOOT = "boot-a"


def h(n: int) -> str:
    """A distinct, well-formed SHA-256 hex string."""
    return f"{n:064x}"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start_mono_ns=5_000_000_000, start_utc_ns=1_700_000_000_000_000_000)


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> Any:
    with Store(tmp_path / "index.db", clock) as s:
        yield s


def _open(store: Store, seq: int, recording_id: str | None = "rec-1") -> None:
    store.open_segment(seq, "segment", f"seg/{seq:08d}.bce", recording_id, 1000 * seq, 2000 * seq)


def _seal(store: Store, seq: int, **kw: Any) -> None:
    args: dict[str, Any] = dict(
        device_id=DEV, boot_id=BOOT, mono_end_ns=1000 * seq + 999, utc_end_ns=2000 * seq + 999,
        manifest_sha256=h(seq), ciphertext_sha256=h(10_000 + seq), size_bytes=100 * seq, chunks=seq,
    )
    args.update(kw)
    store.seal_segment(seq, **args)


def _raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path)


# ---- the file ---------------------------------------------------------------------------------


def test_wal_durability_and_foreign_keys(store: Store, tmp_path: Path) -> None:
    status = store.get_status()
    assert status["journal_mode"] == "wal"
    assert status["synchronous"] == 2  # FULL
    assert status["foreign_keys"] == 1
    assert status["schema_version"] == len(MIGRATIONS) == 4
    with _raw(tmp_path / "index.db") as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persistent in the file


def test_file_mode_is_0600(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "index.db"
    path.touch(mode=0o644)
    path.chmod(0o644)
    with Store(path, clock) as s:
        _open(s, 1)
        for name in ("index.db", "index.db-wal", "index.db-shm"):
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name


def test_unusable_path_is_a_store_error(tmp_path: Path, clock: FakeClock) -> None:
    with pytest.raises(StoreError, match="Creating store"):
        Store(tmp_path / "missing" / "index.db", clock)
    (tmp_path / "junk.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="Opening store"):
        Store(tmp_path / "junk.db", clock)


def test_integrity_check_ok(store: Store) -> None:
    _open(store, 1)
    _seal(store, 1)
    assert store.integrity_check() == "ok"


def test_reopen_after_close_keeps_everything(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "index.db"
    s = Store(path, clock)
    _open(s, 1)
    _seal(s, 1, flags=["marked"], marks=2, priority=5)
    _open(s, 2)
    s.mark_state(1, "uploading")
    s.audit("button", "record", "rec-1", "ok", press_ms=80)
    before = (s.segments(), s.chain_head(DEV), s.audit_tail(10), s.stats())
    s.close()
    s.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        s.segments()
    with Store(path, clock) as again:
        assert (again.segments(), again.chain_head(DEV), again.audit_tail(10), again.stats()) == before
        assert again.schema_version() == len(MIGRATIONS)


# ---- schema versions ---------------------------------------------------------------------------


def test_newer_schema_is_refused(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "index.db"
    Store(path, clock).close()
    with _raw(path) as raw:
        raw.execute("PRAGMA user_version=9")
    with pytest.raises(StoreError, match="schema version 9 is newer"):
        Store(path, clock)


def test_migration_hook_runs_pending_migrations_once(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "index.db"
    with Store(path, clock) as s:
        _open(s, 1)
    calls: list[int] = []

    def v_next(db: Database) -> None:
        calls.append(1)
        db.conn.execute("ALTER TABLE segments ADD COLUMN note TEXT")

    for _ in range(2):
        with Store(path, clock, migrations=(*MIGRATIONS, v_next)) as s:
            assert s.schema_version() == len(MIGRATIONS) + 1
            assert s.segment(1) is not None
    assert calls == [1]


def test_failed_migration_leaves_the_old_version(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "index.db"
    Store(path, clock).close()

    def broken(db: Database) -> None:
        db.conn.execute("CREATE TABLE extra (x)")
        db.conn.execute("THIS IS NOT SQL")

    with pytest.raises(StoreError, match=f"Migrating store to schema {len(MIGRATIONS) + 1}"):
        Store(path, clock, migrations=(*MIGRATIONS, broken))
    with _raw(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert raw.execute("SELECT count(*) FROM sqlite_master WHERE name='extra'").fetchone()[0] == 0


# ---- segments and the chain ------------------------------------------------------------------


def test_open_then_seal_fills_the_row_and_advances_the_head(store: Store, clock: FakeClock) -> None:
    created = clock.utc_ns()
    _open(store, 1)
    seg = store.segment(1)
    assert seg is not None and seg.state == "open" and seg.kind == "segment"
    assert (seg.path, seg.recording_id) == ("seg/00000001.bce", "rec-1")
    assert (seg.mono_start_ns, seg.utc_start_ns) == (1000, 2000)
    assert seg.created_utc_ns == seg.updated_utc_ns == created
    assert store.chain_head(DEV) is None

    clock.advance(10)
    _seal(store, 1, flags=["marked", "gnss-lost"], marks=1, priority=3)
    seg = store.segment(1)
    assert seg is not None and seg.state == "sealed"
    assert (seg.mono_end_ns, seg.utc_end_ns, seg.size_bytes, seg.chunks) == (1999, 2999, 100, 1)
    assert (seg.manifest_sha256, seg.ciphertext_sha256) == (h(1), h(10_001))
    assert (seg.flags, seg.marks, seg.priority, seg.upload_offset, seg.receipt) == (
        ("marked", "gnss-lost"), 1, 3, 0, None)
    assert seg.updated_utc_ns == created + 10_000_000_000
    assert store.chain_head(DEV) == (1, h(1))
    assert store.chain_head("other-device") is None


def test_sealing_twice_or_unknown_is_refused(store: Store) -> None:
    _open(store, 1)
    _seal(store, 1)
    with pytest.raises(StoreError, match="no open segment"):
        _seal(store, 1, manifest_sha256=h(99))
    with pytest.raises(StoreError, match="no open segment"):
        _seal(store, 2)
    assert store.chain_head(DEV) == (1, h(1))


def test_seal_and_chain_are_one_transaction(tmp_path: Path, clock: FakeClock) -> None:
    """A failure after the segment row is updated, before the head moves: nothing is kept."""

    class Boom(Exception):
        pass

    class FailingChain(Store):
        fail = False

        def _advance_chain(self, *args: Any) -> None:
            if self.fail:
                raise Boom
            super()._advance_chain(*args)

    path = tmp_path / "index.db"
    with FailingChain(path, clock) as failing:
        _open(failing, 1)
        _seal(failing, 1)
        _open(failing, 2)
        failing.fail = True
        with pytest.raises(Boom):
            _seal(failing, 2)
        with pytest.raises(Boom):
            failing.record_event_entry(3, device_id=DEV, boot_id=BOOT, path="ev/3.json", recording_id=None,
                                 mono_ns=1, utc_ns=2, manifest_sha256=h(3))
        with pytest.raises(Boom):
            _segment_entry(failing, 4)
    with Store(path, clock) as s:
        seg2 = s.segment(2)
        assert seg2 is not None and seg2.state == "open" and seg2.manifest_sha256 is None
        assert s.segment(3) is None and s.segment(4) is None
        assert s.chain_head(DEV) == (1, h(1))
        assert s.integrity_check() == "ok"


def test_chain_head_only_moves_forward_and_seal_rolls_back(store: Store) -> None:
    _open(store, 1)
    _open(store, 2)
    _seal(store, 2)
    with pytest.raises(StoreError, match="not after head 2"):
        _seal(store, 1)
    seg1 = store.segment(1)
    assert seg1 is not None and seg1.state == "open"  # the UPDATE was rolled back with the chain
    assert store.chain_head(DEV) == (2, h(2))


def test_advance_chain_alone_needs_an_indexed_entry(store: Store) -> None:
    with pytest.raises(StoreError, match="FOREIGN KEY"):
        store.advance_chain(DEV, 7, h(7), BOOT)
    _open(store, 7)
    store.advance_chain(DEV, 7, h(77), "boot-b")
    assert store.chain_head(DEV) == (7, h(77))
    with pytest.raises(StoreError, match="64 lowercase hex"):
        store.advance_chain(DEV, 8, "ABC", BOOT)


def test_record_event_entry(store: Store, clock: FakeClock) -> None:
    _open(store, 1)
    _seal(store, 1)
    store.record_event_entry(2, device_id=DEV, boot_id=BOOT, path="events/2.bce", recording_id="rec-1",
                             mono_ns=55, utc_ns=66, manifest_sha256=h(2), flags=["mark"], marks=1, priority=9)
    ev = store.segment(2)
    assert ev is not None
    assert (ev.kind, ev.state, ev.mono_start_ns, ev.mono_end_ns, ev.utc_start_ns, ev.utc_end_ns) == (
        "event", "sealed", 55, 55, 66, 66)
    assert (ev.flags, ev.marks, ev.priority, ev.ciphertext_sha256) == (("mark",), 1, 9, None)
    assert store.chain_head(DEV) == (2, h(2))
    with pytest.raises(StoreError, match="UNIQUE"):
        store.record_event_entry(2, device_id=DEV, boot_id=BOOT, path="events/2b.bce", recording_id=None,
                                 mono_ns=1, utc_ns=1, manifest_sha256=h(3))


def _segment_entry(store: Store, seq: int, **kw: Any) -> None:
    args: dict[str, Any] = dict(
        device_id=DEV, boot_id=BOOT, path=f"segments/{seq}.bcs", recording_id="rec-1",
        mono_start_ns=10, mono_end_ns=20, utc_start_ns=30, utc_end_ns=40, manifest_sha256=h(seq),
        ciphertext_sha256=h(100 + seq), size_bytes=4096, chunks=2,
    )
    args.update(kw)
    store.record_segment_entry(seq, **args)


def test_record_segment_entry_indexes_sealed_and_advances(store: Store) -> None:
    store.record_event_entry(1, device_id=DEV, boot_id=BOOT, path="segments/1.bcs", recording_id=None,
                             mono_ns=1, utc_ns=2, manifest_sha256=h(1))
    _segment_entry(store, 2, flags=["marked"], marks=1, priority=1)
    seg = store.segment(2)
    assert seg is not None
    assert (seg.kind, seg.state, seg.mono_start_ns, seg.mono_end_ns, seg.utc_start_ns, seg.utc_end_ns) == (
        "segment", "sealed", 10, 20, 30, 40)
    assert (seg.size_bytes, seg.chunks, seg.flags, seg.marks, seg.priority) == (4096, 2, ("marked",), 1, 1)
    assert (seg.manifest_sha256, seg.ciphertext_sha256) == (h(2), h(102))
    assert store.chain_head(DEV) == (2, h(2))
    assert [s.seq for s in store.pending_upload()] == [2, 1]


def test_record_segment_entry_behind_the_head_leaves_no_row(store: Store) -> None:
    _segment_entry(store, 5)
    with pytest.raises(StoreError, match="not after head 5"):
        _segment_entry(store, 3)
    assert store.segment(3) is None
    assert store.chain_head(DEV) == (5, h(5))
    with pytest.raises(StoreError, match="ciphertext_sha256"):
        _segment_entry(store, 6, ciphertext_sha256="nope")
    with pytest.raises(StoreError, match="not relative"):
        _segment_entry(store, 6, path="/abs/6.bcs")
    assert store.segment(6) is None


@pytest.mark.parametrize(
    ("kind", "path", "fragment"),
    [("video", "a.bce", "kind"), ("segment", "/abs/a.bce", "not relative"),
     ("segment", "../a.bce", "not relative"), ("segment", "", "not relative")],
)
def test_open_segment_validation(store: Store, kind: str, path: str, fragment: str) -> None:
    with pytest.raises(StoreError, match=fragment):
        store.open_segment(1, kind, path, None, 0, 0)
    assert store.segments() == []


def test_duplicate_seq_and_bad_hashes(store: Store) -> None:
    _open(store, 1)
    with pytest.raises(StoreError, match="Opening segment 1: UNIQUE"):
        _open(store, 1)
    with pytest.raises(StoreError, match="manifest_sha256"):
        _seal(store, 1, manifest_sha256="xyz")
    with pytest.raises(StoreError, match="ciphertext_sha256"):
        _seal(store, 1, ciphertext_sha256=h(0xABC).upper())


def test_pending_upload_order_priority_then_seq(store: Store) -> None:
    priorities = {1: 0, 2: 5, 3: 0, 4: 5, 5: 1, 6: 0}
    for seq, priority in priorities.items():
        _open(store, seq)
        _seal(store, seq, priority=priority)
    _open(store, 7)  # still open: not pending
    store.mark_state(6, "uploading")  # in flight: not pending
    assert [s.seq for s in store.pending_upload()] == [2, 4, 5, 1, 3]
    assert [s.seq for s in store.pending_upload(limit=2)] == [2, 4]
    store.mark_state(6, "sealed")  # upload abandoned: pending again
    assert [s.seq for s in store.pending_upload()] == [2, 4, 5, 1, 3, 6]


def test_segments_listing(store: Store) -> None:
    for seq in (3, 1, 2):
        _open(store, seq)
    _seal(store, 3)
    assert [s.seq for s in store.segments()] == [1, 2, 3]
    assert [s.seq for s in store.segments("open")] == [1, 2]
    assert [s.seq for s in store.segments("sealed")] == [3]
    with pytest.raises(StoreError, match="unknown state"):
        store.segments("lost")


def test_mark_state_follows_the_table(store: Store, clock: FakeClock) -> None:
    seq = 0
    for src in SEGMENT_STATES:
        for dst in SEGMENT_STATES:
            seq += 1
            _open(store, seq)
            if src == "sealed":
                _seal(store, seq)
            elif src != "open":
                _seal(store, seq)
                path = {"uploading": ["uploading"], "acknowledged": ["acknowledged"],
                        "quarantined": ["quarantined"]}[src]
                for step in path:
                    store.mark_state(seq, step)
            allowed = dst == src or dst in NEXT_STATES[src]
            if allowed:
                store.mark_state(seq, dst)
                seg = store.segment(seq)
                assert seg is not None and seg.state == dst
            else:
                with pytest.raises(StoreError, match=f"not allowed from {src}"):
                    store.mark_state(seq, dst)
    with pytest.raises(StoreError, match="no such segment"):
        store.mark_state(999, "sealed")


def test_receipt_and_upload_offset(store: Store) -> None:
    _open(store, 1)
    _seal(store, 1)  # 100 bytes
    store.mark_state(1, "uploading")
    store.set_upload_offset(1, 64)
    with pytest.raises(StoreError, match="out of range"):
        store.set_upload_offset(1, 101)
    with pytest.raises(StoreError, match="out of range"):
        store.set_upload_offset(1, -1)
    store.mark_state(1, "acknowledged", receipt={"hq_seq": 12, "sig": "abc"})
    seg = store.segment(1)
    assert seg is not None
    assert (seg.upload_offset, seg.receipt, seg.state) == (64, {"hq_seq": 12, "sig": "abc"}, "acknowledged")


def test_stats(store: Store) -> None:
    for seq in (1, 2, 3):
        _open(store, seq)
    _seal(store, 2)
    _seal(store, 3)
    store.mark_state(3, "acknowledged")
    store.audit("agent", "boot", "", "ok")
    stats = store.stats()
    assert stats["by_state"] == {
        "open": {"count": 1, "bytes": 0},
        "sealed": {"count": 1, "bytes": 200},
        "uploading": {"count": 0, "bytes": 0},
        "acknowledged": {"count": 1, "bytes": 300},
        "quarantined": {"count": 0, "bytes": 0},
    }
    assert (stats["count"], stats["bytes"], stats["audit_entries"]) == (3, 500, 1)


# ---- audit ------------------------------------------------------------------------------------


def test_audit_is_ordered_and_timestamped_by_the_clock(store: Store, clock: FakeClock) -> None:
    ids = []
    for i in range(5):
        ids.append(store.audit("ctl:uid=1000", f"action-{i}", "seg/1", "ok", n=i, path=Path("/x")))
        clock.advance(1)
    assert ids == sorted(ids)
    tail = store.audit_tail(3)
    assert [e.action for e in tail] == ["action-2", "action-3", "action-4"]
    first = store.audit_tail(5)[0]
    assert (first.utc_ns, first.mono_ns) == (1_700_000_000_000_000_000, 5_000_000_000)
    assert first.detail == {"n": 0, "path": "/x"}  # unusual types are stored as text, never refused
    assert first.actor == "ctl:uid=1000" and first.target == "seg/1" and first.outcome == "ok"
    assert store.audit_tail(0) == [] and len(store.audit_tail(100)) == 5


def test_audit_outcomes(store: Store) -> None:
    store.audit("console:tech-3", "delete", "seg/9", "refused", reason="evidence is never deleted")
    store.audit("sync", "upload", "seg/1", "failed")
    with pytest.raises(StoreError, match="outcome"):
        store.audit("agent", "x", "", "maybe")
    assert [e.outcome for e in store.audit_tail(5)] == ["refused", "failed"]


def test_audit_is_append_only(store: Store, tmp_path: Path) -> None:
    store.audit("button", "record", "", "ok")
    public = {name for name in dir(Store) if not name.startswith("_")}
    assert not {n for n in public if "audit" in n} - {"audit", "audit_tail"}
    with _raw(tmp_path / "index.db") as raw:
        for sql in ("UPDATE audit SET outcome='failed'", "DELETE FROM audit"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                raw.execute(sql)
    assert len(store.audit_tail(10)) == 1


def test_concurrent_writers_are_serialised(store: Store) -> None:
    errors: list[BaseException] = []

    def worker(base: int) -> None:
        try:
            for i in range(25):
                store.audit(f"t{base}", "tick", str(i), "ok")
                seq = base * 100 + i
                _open(store, seq)
                _seal(store, seq, device_id=f"dev-{base}")
        except BaseException as e:  # collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(b,)) for b in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.stats()["audit_entries"] == 100
    assert store.stats()["by_state"]["sealed"]["count"] == 100
    assert [store.chain_head(f"dev-{b}") for b in range(1, 5)] == [(b * 100 + 24, h(b * 100 + 24)) for b in range(1, 5)]


# ---- local copies (schema 2) -------------------------------------------------------------------


def _acknowledged(store: Store, seq: int) -> None:
    _open(store, seq)
    _seal(store, seq)
    store.mark_state(seq, "acknowledged", receipt={"hq_seq": seq})


def test_schema_1_file_is_migrated_and_keeps_its_rows(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "index.db"
    with Store(path, clock, migrations=MIGRATIONS[:1]) as old:
        _acknowledged(old, 1)
    with Store(path, clock) as s:
        assert s.schema_version() == len(MIGRATIONS)
        seg = s.segment(1)
        assert seg is not None and seg.state == "acknowledged" and seg.local_deleted_utc_ns is None
        assert [x.seq for x in s.local_acknowledged()] == [1]


def test_mark_deleted_local_keeps_the_row_and_audits(store: Store, clock: FakeClock) -> None:
    for seq in (1, 2, 3):
        _acknowledged(store, seq)
    clock.advance(5)
    store.mark_deleted_local(2, actor="storage", reason="age")
    seg = store.segment(2)
    assert seg is not None and seg.state == "acknowledged" and seg.local_deleted_utc_ns == clock.utc_ns()
    assert seg.receipt == {"hq_seq": 2}
    assert [x.seq for x in store.local_acknowledged()] == [1, 3]
    (entry,) = store.audit_tail(1)
    assert (entry.actor, entry.action, entry.target, entry.outcome) == (
        "storage", "delete-local", "seg/00000002.bce", "ok")
    assert entry.detail == {"seq": 2, "bytes": 200, "reason": "age"}
    with pytest.raises(StoreError, match="already marked deleted"):
        store.mark_deleted_local(2, actor="storage")


@pytest.mark.parametrize("state", ["open", "sealed", "uploading", "quarantined", "no-receipt", "missing"])
def test_mark_deleted_local_refuses_unacknowledged_entries(store: Store, state: str) -> None:
    if state != "missing":
        _open(store, 1)
    if state in ("sealed", "uploading", "no-receipt"):
        _seal(store, 1)
    if state in ("uploading", "quarantined"):
        store.mark_state(1, state)
    if state == "no-receipt":
        store.mark_state(1, "acknowledged")
    audits = store.stats()["audit_entries"]
    with pytest.raises(StoreError, match="no such segment" if state == "missing" else "not acknowledged"):
        store.mark_deleted_local(1, actor="storage")
    assert store.stats()["audit_entries"] == audits
    seg = store.segment(1)
    assert seg is None or seg.local_deleted_utc_ns is None


def test_chain_head_seqs(store: Store) -> None:
    assert store.chain_head_seqs() == frozenset()
    _acknowledged(store, 1)
    _acknowledged(store, 2)
    assert store.chain_head_seqs() == {2}
