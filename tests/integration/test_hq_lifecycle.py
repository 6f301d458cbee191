"""The evidence lifecycle on both index engines (SQLite, a real PostgreSQL) with a fake clock:
categories and retention, the deletion queue and restore, legal hold in the index (the database's
own triggers) and in a real S3 server under Object Lock (SeaweedFS refuses the delete), and the
custody ledger's chain."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hq.app import lifecycle_service
from hq.index import HqIndexError, SqlIndex
from hq.lifecycle import DAY_S, NS_PER_S, LifecycleError
from hq.lifecycle_service import LifecycleService
from hq.records import Evidence
from hq.s3store import S3EvidenceStore, connect, parse_location
from hq.storage import FileEvidenceStore, StorageError
from hq.storeurl import parse_store_url
from tests.evidence_util import ChainBuilder
from tests.integration.index_util import raw_error, raw_execute
from tests.s3_util import S3Server, fresh_bucket

T0_NS = 1_790_000_000_000_000_000


class Clock:
    """A settable UTC clock in ns (the lifecycle takes ``now_ns`` as a callable)."""

    def __init__(self, now_ns: int) -> None:
        self.now_ns = now_ns

    def __call__(self) -> int:
        return self.now_ns

    def advance_days(self, days: float) -> None:
        self.now_ns += int(days * DAY_S * NS_PER_S)


@pytest.fixture
def index(db_url: str) -> Iterator[SqlIndex]:
    with SqlIndex.open(db_url, auto_migrate=True) as opened:
        opened.enroll("unit-1", "pem", "ab" * 32, T0_NS)
        yield opened


def store_entry(index: SqlIndex, store: FileEvidenceStore | S3EvidenceStore, tmp_path: Path, seq: int,
                recording_id: str, marks: int = 0, at_ns: int = T0_NS) -> Evidence:
    """A real sealed file put in the store and indexed as ingest would."""
    path = ChainBuilder(tmp_path / f"b{seq}", device_id="unit-1").segment()
    location = store.put("unit-1", seq, path)
    entry = Evidence("unit-1", seq, "segment", f"{seq:064x}", "00" * 32, "ab" * 32, 100, at_ns, at_ns + 10 * NS_PER_S,
                     at_ns, "verified", location, f"{seq:032x}", recording_id=recording_id, marks=marks)
    index.add_evidence(entry)
    return entry


def service(index: SqlIndex, store: FileEvidenceStore | S3EvidenceStore, clock: Clock) -> LifecycleService:
    return lifecycle_service(index, store, clock)


def test_retention_queues_then_deletes_and_restore_brings_it_back(index: SqlIndex, tmp_path: Path) -> None:
    clock, store = Clock(T0_NS), FileEvidenceStore(tmp_path / "hq")
    lc = service(index, store, clock)
    store_entry(index, store, tmp_path, 0, "rec-a")
    store_entry(index, store, tmp_path, 1, "rec-a")
    store_entry(index, store, tmp_path, 2, "rec-b")
    lc.assign("sgt", "unit-1", "rec-a", "no-incident")  # 90 days
    lc.assign("sgt", "unit-1", "rec-b", "no-incident")
    lc.assign("sgt", "unit-1", "rec-b", "traffic")  # 1 year: the longest wins
    clock.advance_days(89)
    assert lc.run_pass()["queued"] == 0
    clock.advance_days(2)
    assert lc.run_pass()["queued"] == 1
    rec_a = lc.index.recording("unit-1", "rec-a")
    assert rec_a is not None and rec_a.state == "queued" and rec_a.queued_by == "retention"
    assert lc.index.recording("unit-1", "rec-b").state == "kept"  # type: ignore[union-attr]
    clock.advance_days(6)
    assert lc.run_pass()["deleted"] == 0  # the queue waits 7 days
    lc.restore("sgt", "unit-1", "rec-a")
    clock.advance_days(30)
    counts = lc.run_pass()
    assert counts["queued"] == 0 and counts["deleted"] == 0  # a person kept it: retention waits for a new category
    assert store.exists("unit-1", 0) and store.exists("unit-1", 1)
    lc.assign("sgt", "unit-1", "rec-a", "no-incident")  # unchanged set, but re-assigning re-applies retention
    assert lc.run_pass()["queued"] == 1
    clock.advance_days(7)
    assert lc.run_pass()["deleted"] == 1
    assert not store.exists("unit-1", 0) and not store.exists("unit-1", 1) and store.exists("unit-1", 2)
    gone = index.evidence("unit-1", 0)
    assert gone is not None and gone.deleted_utc_ns is not None  # the index keeps what existed
    events = [(r.event_type, r.target) for r in lc.index.custody_log("unit-1/rec-a")]
    assert events.count(("deletion-request", "unit-1/rec-a")) == 2
    assert ("restore", "unit-1/rec-a") in events and events[-1] == ("delete", "unit-1/rec-a")
    assert lc.index.verify_custody().intact


def test_marks_from_the_unit_keep_a_recording_for_review(index: SqlIndex, tmp_path: Path) -> None:
    clock, store = Clock(T0_NS), FileEvidenceStore(tmp_path / "hq")
    lc = service(index, store, clock)
    store_entry(index, store, tmp_path, 0, "rec-m", marks=1)
    store_entry(index, store, tmp_path, 1, "rec-u")
    marked, plain = lc.index.recording("unit-1", "rec-m"), lc.index.recording("unit-1", "rec-u")
    assert marked is not None and marked.categories == ("pending-review",)
    assert plain is not None and plain.categories == ()
    clock.advance_days(3 * 365 + 1)  # past the default category's 3 years
    assert lc.run_pass()["queued"] == 1
    assert lc.index.recording("unit-1", "rec-m").state == "kept"  # type: ignore[union-attr]
    lc.assign("sgt", "unit-1", "rec-m", "arrest")  # the supervisor's category replaces the review one
    assert lc.index.recording("unit-1", "rec-m").categories == ("arrest",)  # type: ignore[union-attr]


def test_a_hold_blocks_deletion_in_the_index_and_the_file_store(index: SqlIndex, db_url: str, tmp_path: Path) -> None:
    clock, store = Clock(T0_NS), FileEvidenceStore(tmp_path / "hq")
    lc = service(index, store, clock)
    store_entry(index, store, tmp_path, 0, "rec-a")
    lc.request_deletion("sgt", "unit-1", "rec-a", "duplicate upload")
    lc.open_case("det", "2026-0042", "burglary, 3 Elm St")
    lc.add_to_case("det", "2026-0042", "unit-1", "rec-a")  # comes out of the queue, on hold
    rec = lc.index.recording("unit-1", "rec-a")
    assert rec is not None and rec.state == "kept" and rec.held and rec.hold_applied
    assert store.protection("unit-1", 0).legal_hold
    with pytest.raises(StorageError, match="legal hold"):
        store.delete("unit-1", 0)
    with pytest.raises(LifecycleError, match="legal hold"):
        lc.request_deletion("sgt", "unit-1", "rec-a", "again")
    # the database itself refuses, even to a raw connection that bypasses the index
    for sql in ("UPDATE recordings SET state = 'deleted' WHERE recording_id = 'rec-a'",
                "UPDATE evidence SET deleted_utc_ns = 1 WHERE seq = 0"):
        with pytest.raises(raw_error(db_url), match="legal hold"):
            raw_execute(db_url, sql)
    with pytest.raises(HqIndexError, match="legal hold"):
        lc.index.queue("unit-1", "rec-a", "x", "y", clock())
    lc.close_case("det", "2026-0042")
    assert not store.protection("unit-1", 0).legal_hold
    lc.request_deletion("sgt", "unit-1", "rec-a", "case closed, no further use")
    clock.advance_days(7)
    assert lc.run_pass()["deleted"] == 1 and not store.exists("unit-1", 0)
    kinds = [r.event_type for r in lc.index.custody_log("unit-1/rec-a")]
    assert kinds == ["deletion-request", "hold", "deletion-request", "release", "deletion-request", "delete"]


def test_the_custody_ledger_finds_an_edited_or_deleted_row(index: SqlIndex, db_url: str, tmp_path: Path) -> None:
    clock, store = Clock(T0_NS), FileEvidenceStore(tmp_path / "hq")
    lc = service(index, store, clock)
    for seq in range(3):
        store_entry(index, store, tmp_path, seq, f"rec-{seq}")
        lc.assign("sgt", "unit-1", f"rec-{seq}", "traffic")
    assert lc.index.verify_custody().intact
    with pytest.raises(raw_error(db_url), match="append-only"):
        raw_execute(db_url, "UPDATE custody SET actor = 'nobody' WHERE id = 2")
    drop = ("DROP TRIGGER custody_no_update" if db_url.startswith("sqlite")
            else "ALTER TABLE custody DISABLE TRIGGER custody_no_change")
    raw_execute(db_url, drop)
    raw_execute(db_url, "UPDATE custody SET actor = 'nobody' WHERE id = 2")
    report = lc.index.verify_custody()
    assert not report.intact and report.broken_id == 2 and "changed" in (report.problem or "")
    if db_url.startswith("sqlite"):
        raw_execute(db_url, "DROP TRIGGER custody_no_delete")
    raw_execute(db_url, "UPDATE custody SET actor = 'sgt' WHERE id = 2")
    assert lc.index.verify_custody().intact
    raw_execute(db_url, "DELETE FROM custody WHERE id = 2")
    report = lc.index.verify_custody()
    assert not report.intact and report.broken_id == 3 and "removed" in (report.problem or "")


LOCK_LEFT_S = 15  # seconds of Object Lock left after a put whose store clock runs a day behind


def make_s3(s3: S3Server, clock: Callable[[], int], **params: str | int) -> S3EvidenceStore:
    config = parse_store_url(s3.store_url(fresh_bucket(), retention_days=1, **params))
    store = S3EvidenceStore(connect(config, s3.session()), config, clock)
    store.prepare()
    return store


def test_a_hold_is_an_s3_legal_hold_the_server_enforces(s3_server: S3Server, tmp_path: Path) -> None:
    # The store's clock runs a day (less LOCK_LEFT_S) behind real time, so its COMPLIANCE lock (one
    # day) ends LOCK_LEFT_S after the put: then only the legal hold stands between the server and a delete.
    store = make_s3(s3_server, lambda: time.time_ns() - DAY_S * NS_PER_S + LOCK_LEFT_S * NS_PER_S)
    real = time.time_ns()
    with SqlIndex.open(f"sqlite:///{tmp_path / 'index.sqlite'}", auto_migrate=True) as index:
        index.enroll("unit-1", "pem", "ab" * 32, real)
        clock = Clock(real)
        lc = service(index, store, clock)
        entry = store_entry(index, store, tmp_path, 0, "rec-a", at_ns=real)
        lc.open_case("det", "2026-0042", "assault")
        lc.add_to_case("det", "2026-0042", "unit-1", "rec-a")
        bucket, key, version = parse_location(entry.location)
        client = s3_server.client()
        head = client.head_object(Bucket=bucket, Key=key, VersionId=version)
        assert head["ObjectLockLegalHoldStatus"] == "ON"
        lock_ends_ns = store.protection("unit-1", 0, entry.location).retain_until_ns
        assert lock_ends_ns is not None
        time.sleep(max(0.0, (lock_ends_ns - time.time_ns()) / NS_PER_S) + 1.5)  # the lock's date passes
        with pytest.raises(StorageError, match="refused, AccessDenied"):  # the server refuses: legal hold
            store.delete("unit-1", 0, entry.location)
        # even a client that skips the index and bypasses governance is refused by the server
        from botocore.exceptions import ClientError
        with pytest.raises(ClientError, match="AccessDenied"):
            client.delete_object(Bucket=bucket, Key=key, VersionId=version, BypassGovernanceRetention=True)
        lc.close_case("det", "2026-0042")
        assert client.head_object(Bucket=bucket, Key=key, VersionId=version)["ObjectLockLegalHoldStatus"] == "OFF"
        lc.request_deletion("sgt", "unit-1", "rec-a", "case closed")
        clock.advance_days(7)
        assert lc.run_pass()["deleted"] == 1
        versions = client.list_object_versions(Bucket=bucket, Prefix=key).get("Versions", [])
        assert versions == []


def test_s3_deletion_waits_for_the_statutory_lock(s3_server: S3Server, tmp_path: Path) -> None:
    real = time.time_ns()
    store = make_s3(s3_server, Clock(real))  # locked one day from now
    with SqlIndex.open(f"sqlite:///{tmp_path / 'index.sqlite'}", auto_migrate=True) as index:
        index.enroll("unit-1", "pem", "ab" * 32, real)
        clock = Clock(real)
        lc = service(index, store, clock)
        entry = store_entry(index, store, tmp_path, 0, "rec-a", at_ns=real)
        lc.request_deletion("sgt", "unit-1", "rec-a", "test footage")
        clock.advance_days(0.5)
        lc.limits = type(lc.limits)(batch=10, queue_s=3600)
        assert lc.run_pass()["refused"] == 1  # the object's COMPLIANCE lock has half a day to run
        assert lc.index.recording("unit-1", "rec-a").state == "queued"  # type: ignore[union-attr]
        assert store.exists("unit-1", 0) and entry.location
        # the custody ledger's head is anchored as a locked object in the same bucket
        anchors = store.list_records("custody/anchors/")
        assert len(anchors) == 1 and lc.anchors.verify()[1:] == ([], 1)
        head = s3_server.client().head_object(Bucket=store.bucket, Key="records/" + anchors[0])
        assert head["ObjectLockMode"] == "COMPLIANCE"


def test_anchors_in_the_store_show_records_cut_from_the_end(index: SqlIndex, db_url: str, tmp_path: Path) -> None:
    clock, store = Clock(T0_NS), FileEvidenceStore(tmp_path / "hq")
    lc = service(index, store, clock)
    store_entry(index, store, tmp_path, 0, "rec-0")
    lc.assign("sgt", "unit-1", "rec-0", "traffic")
    assert lc.run_pass()["anchored"] == 1
    assert lc.run_pass()["anchored"] == 0  # the head has not moved
    lc.assign("sgt", "unit-1", "rec-0", "arrest")
    assert lc.run_pass()["anchored"] == 0  # within the interval (an hour)
    clock.advance_days(1)
    assert lc.run_pass()["anchored"] == 1
    names = store.list_records("custody/anchors/")
    assert len(names) == 2 and (tmp_path / "hq" / "records" / names[0]).stat().st_mode & 0o777 == 0o400
    report, problems, count = lc.anchors.verify()
    assert report.intact and problems == [] and count == 2
    drop = ("DROP TRIGGER custody_no_delete" if db_url.startswith("sqlite")
            else "ALTER TABLE custody DISABLE TRIGGER custody_no_change")
    raw_execute(db_url, drop)
    raw_execute(db_url, "DELETE FROM custody WHERE id = (SELECT MAX(id) FROM custody)")
    report, problems, count = lc.anchors.verify()
    assert report.intact  # the chain alone cannot see a cut end...
    assert len(problems) == 1 and "cut from the end" in problems[0]  # ...the anchor does
