"""Retention, quotas and per-device locks of the index, on SQLite and on a real PostgreSQL.

The database's triggers read the database's clock, so these tests place rows relative to the
real time (``NOW_NS``) rather than a fixed date.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from hq.db.retention import PruneLimits
from hq.index import HqIndexError, SqlIndex
from hq.records import Upload
from tests.integration.index_util import cli_url, raw_error, raw_execute, run_hq, run_together

DAY_NS = 86_400 * 1_000_000_000
@pytest.fixture
def index(db_url: str) -> Iterator[SqlIndex]:
    with SqlIndex.open(db_url, auto_migrate=True) as opened:
        opened.enroll("unit-1", "pem", "ab" * 32, 0)
        opened.enroll("unit-2", "pem", "cd" * 32, 0)
        yield opened


def heartbeat(index: SqlIndex, device_id: str, at_ns: int, lat: str | None = "52.1") -> bytes:
    status = {"battery": {"percent": 80}, "gnss": None if lat is None else {"lat_deg": lat, "lon_deg": "4.3"}}
    body = json.dumps({"sig": "c2ln", "status": status}, sort_keys=True).encode()
    index.add_heartbeat(device_id, at_ns, body, status)
    return body


def test_expired_nonces_are_pruned_in_bounded_batches(db_url: str) -> None:
    with SqlIndex.open(db_url, auto_migrate=True) as index:
        index.limits = PruneLimits(nonce_ttl_s=600, batch_rows=3, nonce_prune_interval_s=10**9)
        for n in range(5):
            assert not index.nonce_seen("unit-1", f"old-{n}", 1000, 600)
        assert not index.nonce_seen("unit-1", "fresh", 1900, 600)
        now_ns = 2000 * 1_000_000_000
        assert index.prune(now_ns)["nonces_deleted"] == 3
        assert index.prune(now_ns)["nonces_deleted"] == 2
        assert index.prune(now_ns)["nonces_deleted"] == 0
        assert index.nonce_seen("unit-1", "fresh", 2000, 600)  # still remembered


def test_heartbeats_past_the_age_are_pruned_and_younger_ones_cannot_be_deleted(index: SqlIndex, db_url: str) -> None:
    now = time.time_ns()
    heartbeat(index, "unit-1", now - 40 * DAY_NS)
    heartbeat(index, "unit-1", now - 31 * DAY_NS)
    recent = heartbeat(index, "unit-1", now - 1 * DAY_NS, lat=None)
    counts = index.prune(now)
    assert counts["heartbeats_deleted_by_age"] == 2 and counts["heartbeats_deleted_by_count"] == 0
    assert index.heartbeats("unit-1") == [(now - DAY_NS, recent)]
    with pytest.raises(raw_error(db_url), match="append-only"):
        raw_execute(db_url, "DELETE FROM heartbeats")
    if not db_url.startswith("sqlite"):
        with pytest.raises(raw_error(db_url), match="append-only"):
            raw_execute(db_url, "TRUNCATE heartbeats")
    assert len(index.heartbeats("unit-1")) == 1


def test_each_unit_keeps_its_newest_heartbeats_up_to_the_count(index: SqlIndex, db_url: str) -> None:
    raw_execute(db_url, "UPDATE hq_policy SET heartbeat_max_per_unit = 5")  # the owner changes the policy
    now = time.time_ns()
    for n in range(8):
        heartbeat(index, "unit-1", now - 3600 * 10**9 + n, lat=None)
    heartbeat(index, "unit-2", now, lat=None)
    counts = index.prune(now)
    assert counts["heartbeats_deleted_by_count"] == 3
    assert [t for t, _ in index.heartbeats("unit-1")] == [now - 3600 * 10**9 + n for n in range(3, 8)]
    assert len(index.heartbeats("unit-2")) == 1
    with pytest.raises(raw_error(db_url), match="append-only"):  # the 5 kept are within the policy
        raw_execute(db_url, "DELETE FROM heartbeats WHERE device_id = 'unit-1'")
    assert index.prune(now)["heartbeats_deleted_by_count"] == 0


def test_positions_are_stripped_after_the_position_retention(index: SqlIndex, db_url: str) -> None:
    now = time.time_ns()
    heartbeat(index, "unit-1", now - 10 * DAY_NS)
    no_fix = heartbeat(index, "unit-1", now - 9 * DAY_NS, lat=None)
    fresh = heartbeat(index, "unit-1", now - 1 * DAY_NS, lat="51.9")
    heartbeat(index, "unit-2", now - 8 * DAY_NS)  # unit-2's last status is old too
    assert index.prune(now)["positions_stripped"] == 3
    [(_, old), (_, kept_no_fix), (_, kept_fresh)] = index.heartbeats("unit-1")
    assert b"lat_deg" not in old and json.loads(old) == {
        "position_stripped": True, "status": {"battery": {"percent": 80}}}
    assert kept_no_fix == no_fix and kept_fresh == fresh  # nothing to strip; too young to strip
    unit1, unit2 = index.device("unit-1"), index.device("unit-2")
    assert unit1 is not None and unit1.last_status is not None and unit1.last_status["gnss"]["lat_deg"] == "51.9"
    assert unit2 is not None and unit2.last_status == {"battery": {"percent": 80}}
    assert index.prune(now)["positions_stripped"] == 0
    with pytest.raises(raw_error(db_url), match="append-only"):  # a young row is not stripped by hand
        raw_execute(db_url, f"UPDATE heartbeats SET position_stripped = {'1' if 'sqlite' in db_url else 'true'}")


def test_quota_rate_and_expiry_queries(index: SqlIndex) -> None:
    def upload(uid: str, device_id: str, length: int, updated_ns: int, state: str = "receiving") -> None:
        index.add_upload(Upload(uid * 32, device_id, len(uid), "f", "ee" * 32, length, state, 0, updated_ns))

    upload("a", "unit-1", 4 << 30, 100)
    upload("b", "unit-1", 1000, 300)
    upload("c", "unit-1", 7, 50, state="stored")
    upload("d", "unit-2", 9, 10)
    upload("e", "unit-1", 20, 60, state="ingesting")
    assert index.open_uploads("unit-1") == (3, (4 << 30) + 1000 + 20)
    assert index.open_uploads("unit-9") == (0, 0)
    assert [u.upload_id for u in index.expired_uploads(200)] == ["d" * 32, "a" * 32]
    now = time.time_ns()
    for n in range(4):
        heartbeat(index, "unit-1", now - n * 10**9, lat=None)
    assert index.heartbeat_count_since("unit-1", now - 2 * 10**9) == 3
    assert index.heartbeat_count_since("unit-2", 0) == 0
    index.limits = PruneLimits(abandoned_upload_s=1)
    assert index.prune(250 + 10**9)["abandoned_uploads"] == 2


def test_a_device_lock_admits_one_holder_across_nodes(db_url: str) -> None:
    nodes = [SqlIndex.open(db_url, auto_migrate=True) for _ in range(2)]
    inside: list[str] = []
    overlaps: list[str] = []

    def work(n: int) -> None:
        for _ in range(15):
            with nodes[n].device_lock("unit-1"):
                if inside:
                    overlaps.append(f"node-{n} entered while {inside[0]} held it")
                inside.append(f"node-{n}")
                time.sleep(0.005)
                inside.remove(f"node-{n}")

    try:
        run_together(work, 2)
        with nodes[0].device_lock("unit-1"):
            with nodes[1].device_lock("unit-2", timeout_s=5):  # another unit is not held up
                pass
            with pytest.raises(HqIndexError, match="busy"), nodes[1].device_lock("unit-1", timeout_s=0.2):
                pass
    finally:
        for node in nodes:
            node.close()
    assert overlaps == []


def test_heartbeats_prune_command_applies_the_policy(index: SqlIndex, db_url: str) -> None:
    now = time.time_ns()
    heartbeat(index, "unit-1", now - 45 * DAY_NS)
    heartbeat(index, "unit-1", now - 8 * DAY_NS)
    url, env = cli_url(db_url)
    done = run_hq("heartbeats", "prune", "--database-url", url, env=env)
    assert done.returncode == 0, done.stderr
    assert "heartbeats kept 30 days and at most 10000 per unit; positions kept 7 days" in done.stdout
    assert "heartbeats deleted by age 1," in done.stdout and "positions stripped 1," in done.stdout
    assert len(index.heartbeats("unit-1")) == 1
