"""Storage policy: thresholds, levels with hysteresis, retention of acknowledged footage only, and the maintainer."""

from __future__ import annotations

import dataclasses
import errno
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import ConfigError, SensorConfig, StorageConfig, default_config
from agent.fsutil import OsCalls, StorageError, free_bytes
from agent.storage import (
    CONTAINER_OVERHEAD,
    HYSTERESIS_MIN_BYTES,
    INDEX_MARGIN_BYTES,
    LEVEL_ALARMS,
    THERMAL_RAW_BPS,
    WARN_FLOOR_BYTES,
    StorageLevel,
    StorageMaintainer,
    StorageThresholds,
    disk_bytes,
    hours_left,
    level_for,
    next_level,
    recording_bytes_per_second,
    retention_expired,
    retention_plan,
    thresholds_for,
)
from agent.store import SEGMENT_STATES, RingEntry, Segment, Store
from tests.fakes import FakeClock

L = StorageLevel
DAY_NS = 86400 * 10**9
BPS = 500_000.0  # 4 Mbit/s
DEV = "unit-7"

# ---- thresholds --------------------------------------------------------------------------------


def test_defaults_are_derived_from_the_bitrate() -> None:
    t = thresholds_for(StorageConfig(), BPS)
    assert t == StorageThresholds(
        warn_free_bytes=WARN_FLOOR_BYTES,  # an hour is 1.8 GB: the 4 GB floor wins
        critical_free_bytes=450_000_000 + INDEX_MARGIN_BYTES,
        full_free_bytes=150_000_000 + INDEX_MARGIN_BYTES,
        reserve_free_bytes=30_000_000 + INDEX_MARGIN_BYTES,
        hysteresis_bytes=30_000_000,
    )


def test_an_hour_of_recording_beats_the_floor_at_high_bitrates_and_small_disks_lower_it() -> None:
    assert thresholds_for(StorageConfig(), 6_250_000).warn_free_bytes == 22_500_000_000 + INDEX_MARGIN_BYTES
    small = thresholds_for(StorageConfig(), BPS, disk_bytes=8_000_000_000)
    assert small.warn_free_bytes == 1_800_000_000 + INDEX_MARGIN_BYTES  # floor 1 GB < an hour
    assert thresholds_for(StorageConfig(), BPS, disk_bytes=128_000_000_000).warn_free_bytes == WARN_FLOOR_BYTES
    assert thresholds_for(StorageConfig(), 1000.0).hysteresis_bytes == HYSTERESIS_MIN_BYTES


def test_explicit_values_override_and_derived_ones_are_clamped_between_them() -> None:
    explicit = StorageConfig(warn_free_bytes=9000, critical_free_bytes=7000, full_free_bytes=5000,
                             reserve_free_bytes=3000)
    t = thresholds_for(explicit, BPS)
    assert (t.warn_free_bytes, t.critical_free_bytes, t.full_free_bytes, t.reserve_free_bytes) == (
        9000, 7000, 5000, 3000)
    # A big explicit reserve lifts the derived full and critical to it; warn stays derived.
    lifted = thresholds_for(StorageConfig(reserve_free_bytes=2_000_000_000), BPS)
    assert (lifted.warn_free_bytes, lifted.critical_free_bytes, lifted.full_free_bytes) == (
        WARN_FLOOR_BYTES, 2_000_000_000, 2_000_000_000)
    # A small explicit warn caps the derived critical and full; the derived reserve is below it.
    capped = thresholds_for(StorageConfig(warn_free_bytes=100_000_000), BPS)
    assert (capped.critical_free_bytes, capped.full_free_bytes) == (100_000_000, 100_000_000)
    assert capped.reserve_free_bytes == 30_000_000 + INDEX_MARGIN_BYTES


@pytest.mark.parametrize(("config", "key", "higher"), [
    (StorageConfig(warn_free_bytes=10, full_free_bytes=20), "storage.full_free_bytes", "storage.warn_free_bytes"),
    (StorageConfig(critical_free_bytes=10, reserve_free_bytes=11), "storage.reserve_free_bytes",
     "storage.critical_free_bytes"),
])
def test_explicit_values_out_of_order_name_the_keys(config: StorageConfig, key: str, higher: str) -> None:
    with pytest.raises(ConfigError) as info:
        thresholds_for(config, BPS)
    assert info.value.key == key
    assert str(info.value).startswith(f"{key}: ") and higher in str(info.value)


def test_bad_rates_and_direct_misuse_are_refused() -> None:
    for bps in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="bytes_per_second"):
            thresholds_for(StorageConfig(), bps)
    with pytest.raises(ValueError, match="warn >= critical"):
        StorageThresholds(1, 2, 0, 0)
    with pytest.raises(ValueError, match="negative"):
        StorageThresholds(1, 1, 1, 1, hysteresis_bytes=-1)


def test_recording_rate_counts_what_is_enabled() -> None:
    config = default_config("u")
    rec = config.recording
    expected = (rec.video_bitrate_bps + rec.audio_bitrate_bps + THERMAL_RAW_BPS) / 8 * CONTAINER_OVERHEAD
    assert recording_bytes_per_second(config) == pytest.approx(expected)
    off = SensorConfig(enabled=False)
    two_cameras = dataclasses.replace(
        config, cameras={"chest": SensorConfig(), "helmet": SensorConfig(), "spare": off}, microphone=off, thermal=off)
    assert recording_bytes_per_second(two_cameras) == pytest.approx(2 * rec.video_bitrate_bps / 8 * CONTAINER_OVERHEAD)


def test_hours_left() -> None:
    assert hours_left(int(3600 * BPS), BPS) == 1.0
    assert hours_left(-5, BPS) == 0.0
    with pytest.raises(ValueError):
        hours_left(1, 0.0)


# ---- levels ------------------------------------------------------------------------------------

T = StorageThresholds(1000, 500, 200, 100, hysteresis_bytes=50)

TRANSITIONS = [
    (L.OK, 1000, L.OK), (L.OK, 999, L.LOW), (L.OK, 499, L.CRITICAL), (L.OK, 199, L.FULL),
    (L.OK, 99, L.EXHAUSTED), (L.OK, 0, L.EXHAUSTED),
    (L.LOW, 600, L.LOW), (L.LOW, 1000, L.LOW), (L.LOW, 1049, L.LOW), (L.LOW, 1050, L.OK), (L.LOW, 499, L.CRITICAL),
    (L.CRITICAL, 500, L.CRITICAL), (L.CRITICAL, 549, L.CRITICAL), (L.CRITICAL, 550, L.LOW),
    (L.CRITICAL, 1049, L.LOW), (L.CRITICAL, 1050, L.OK), (L.CRITICAL, 150, L.FULL),
    (L.FULL, 249, L.FULL), (L.FULL, 250, L.CRITICAL), (L.FULL, 99, L.EXHAUSTED),
    (L.EXHAUSTED, 100, L.EXHAUSTED), (L.EXHAUSTED, 149, L.EXHAUSTED), (L.EXHAUSTED, 150, L.FULL),
    (L.EXHAUSTED, 10**12, L.OK),
]


@pytest.mark.parametrize(("current", "free", "expected"), TRANSITIONS,
                         ids=[f"{c.value}-{f}" for c, f, _ in TRANSITIONS])
def test_next_level(current: StorageLevel, free: int, expected: StorageLevel) -> None:
    assert next_level(current, free, T) is expected


def test_free_space_wobbling_around_a_threshold_does_not_flap() -> None:
    level, changes = L.OK, 0
    for free in [1010, 990, 1010, 990, 1040, 995, 1049, 1050, 1020, 1001]:
        new = next_level(level, free, T)
        changes += new is not level
        level = new
    assert (level, changes) == (L.OK, 2)  # down once at 990, up once at 1050


@given(st.sampled_from(list(StorageLevel)), st.integers(-10, 2000),
       st.lists(st.integers(0, 1500), min_size=4, max_size=4), st.integers(0, 300))
def test_next_level_lies_between_the_plain_and_the_raised_level(
    current: StorageLevel, free: int, values: list[int], margin: int
) -> None:
    warn, critical, full, reserve = sorted(values, reverse=True)
    t = StorageThresholds(warn, critical, full, reserve, hysteresis_bytes=margin)
    result = next_level(current, free, t)
    assert level_for(free, t).severity <= result.severity <= level_for(free, t, margin).severity
    if level_for(free, t).severity >= current.severity:
        assert result is level_for(free, t)  # getting worse is never delayed


# ---- retention plan ----------------------------------------------------------------------------

NOW = 1_700_000_000 * 10**9
KEEP_S = 7 * 86400.0


def seg(seq: int, state: str = "acknowledged", size: int = 100, age_ns: int = 0,
        receipt: bool = True, deleted: bool = False) -> Segment:
    return Segment(
        seq=seq, kind="segment", path=f"segments/{seq:08d}.bce", state=state, recording_id="r",
        mono_start_ns=0, mono_end_ns=1, utc_start_ns=0, utc_end_ns=1, size_bytes=size, chunks=1,
        ciphertext_sha256=None, manifest_sha256=None, flags=(), marks=0, priority=0, upload_offset=0,
        receipt={"hq": seq} if receipt else None, created_utc_ns=NOW - age_ns, updated_utc_ns=NOW - age_ns,
        local_deleted_utc_ns=NOW if deleted else None,
    )


PLENTY = 10**9
SMALL_T = StorageThresholds(1000, 500, 200, 100, hysteresis_bytes=50)


def test_only_expired_acknowledged_entries_go_when_space_is_fine() -> None:
    segments = [seg(1, age_ns=8 * DAY_NS), seg(2, age_ns=6 * DAY_NS), seg(3, age_ns=7 * DAY_NS),
                seg(4, "sealed", age_ns=30 * DAY_NS), seg(5, age_ns=9 * DAY_NS, receipt=False),
                seg(6, age_ns=9 * DAY_NS, deleted=True), seg(7, age_ns=9 * DAY_NS)]
    assert retention_plan(segments, NOW, KEEP_S, PLENTY, SMALL_T) == [1, 3, 7]
    assert retention_plan(segments, NOW, KEEP_S, PLENTY, SMALL_T, protect={7}) == [1, 3]
    assert retention_plan(segments, NOW, 0.0, PLENTY, SMALL_T) == [1, 2, 3, 7]


def test_low_space_frees_oldest_acknowledged_first_until_warn_plus_hysteresis() -> None:
    segments = [seg(5, size=300), seg(2, "uploading", size=10_000), seg(3, size=300), seg(8, size=300),
                seg(9, size=300)]
    # 500 free, target 1050: 3 and 5 bring 1100. Unacknowledged 2 is never touched.
    assert retention_plan(segments, NOW, KEEP_S, 500, SMALL_T) == [3, 5]
    assert retention_plan(segments, NOW, KEEP_S, 1049, SMALL_T) == [3]
    assert retention_plan(segments, NOW, KEEP_S, 1050, SMALL_T) == []
    # Expired ones count first, so they spare an older, fresher copy.
    mixed = [seg(1, size=300), seg(2, size=600, age_ns=8 * DAY_NS)]
    assert retention_plan(mixed, NOW, KEEP_S, 500, SMALL_T) == [2]
    # Not enough acknowledged footage: all of it, and nothing else.
    assert retention_plan(segments, NOW, KEEP_S, 0, SMALL_T) == [3, 5, 8, 9]


def test_a_clock_stepped_backwards_expires_nothing() -> None:
    assert not retention_expired(seg(1), NOW - DAY_NS, 0.0)
    assert retention_expired(seg(1), NOW, 0.0)


_segments = st.lists(
    st.builds(seg, seq=st.integers(0, 200), state=st.sampled_from(SEGMENT_STATES), size=st.integers(0, 2000),
              age_ns=st.integers(-DAY_NS, 20 * DAY_NS), receipt=st.booleans(), deleted=st.booleans()),
    max_size=40, unique_by=lambda s: s.seq)


@settings(max_examples=300, deadline=None)
@given(_segments, st.integers(0, 5000), st.floats(0, 30 * 86400.0), st.sets(st.integers(0, 200), max_size=3))
def test_the_plan_holds_only_acknowledged_entries(
    segments: list[Segment], free: int, keep_s: float, protect: set[int]
) -> None:
    plan = retention_plan(segments, NOW, keep_s, free, SMALL_T, protect=protect)
    by_seq = {s.seq: s for s in segments}
    assert plan == sorted(set(plan))
    for seq in plan:
        s = by_seq[seq]
        assert s.state == "acknowledged" and s.receipt is not None and s.local_deleted_utc_ns is None
        assert seq not in protect
    eligible = sorted(s.seq for s in segments if s.state == "acknowledged" and s.receipt is not None
                      and s.local_deleted_utc_ns is None and s.seq not in protect)
    expired = [q for q in eligible if retention_expired(by_seq[q], NOW, keep_s)]
    assert set(expired) <= set(plan)
    # Beyond the expired ones: a prefix of the rest, oldest first, and only as much as needed.
    fresh = [q for q in eligible if q not in expired]
    extra = [q for q in plan if q not in expired]
    assert extra == fresh[:len(extra)]
    freed = sum(by_seq[q].size_bytes for q in plan)
    target = SMALL_T.warn_free_bytes + SMALL_T.hysteresis_bytes
    if extra:
        assert free + freed - by_seq[extra[-1]].size_bytes < target
    if free + freed < target:
        assert plan == eligible


# ---- the maintainer ------------------------------------------------------------------------------


class FakeDisk:
    """Free space of a small pretend disk: capacity minus the files under the data dir."""

    def __init__(self, root: Path, capacity: int) -> None:
        self.root = root
        self.capacity = capacity
        self.failures: list[OSError] = []
        self.calls = 0

    def __call__(self, path: Path) -> int:
        assert path == self.root
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return self.capacity - sum(p.stat().st_size for p in self.root.rglob("*.bce"))


class FailingUnlink(OsCalls):
    def __init__(self, names: set[str]) -> None:
        self.names = names

    def unlink(self, path: str) -> None:
        if Path(path).name in self.names:
            raise PermissionError(errno.EACCES, "Permission denied", path)
        super().unlink(path)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> Iterator[Store]:
    with Store(tmp_path / "index.sqlite", clock) as s:
        yield s


def add(store: Store, data_dir: Path, seq: int, state: str, size: int = 100, receipt: bool = True) -> Path:
    """Index entry ``seq`` in ``state`` with a file of ``size`` bytes."""
    rel = f"segments/{seq:08d}.bce"
    (data_dir / "segments").mkdir(exist_ok=True)
    (data_dir / rel).write_bytes(b"x" * size)
    store.record_segment_entry(
        seq, device_id=DEV, boot_id="b", path=rel, recording_id="r", mono_start_ns=seq, mono_end_ns=seq + 1,
        utc_start_ns=seq, utc_end_ns=seq + 1, manifest_sha256=f"{seq:064x}", ciphertext_sha256=f"{seq + 1:064x}",
        size_bytes=size, chunks=1)
    if state in ("uploading", "quarantined", "acknowledged"):
        store.mark_state(seq, state, receipt={"hq_seq": seq} if state == "acknowledged" and receipt else None)
    return data_dir / rel


Change = tuple[StorageLevel, StorageLevel, int]


def maintainer(tmp_path: Path, store: Store, clock: FakeClock, disk: FakeDisk, *,
               changes: list[Change] | None = None, **kw: object) -> StorageMaintainer:
    def on_level(old: StorageLevel, new: StorageLevel, free: int) -> None:
        if changes is not None:
            changes.append((old, new, free))

    args: dict[str, object] = dict(keep_acknowledged_s=KEEP_S, interval_s=60.0, on_level=on_level,
                                   bytes_per_second=10.0, free_bytes=disk)
    args.update(kw)
    return StorageMaintainer(tmp_path, store, clock, SMALL_T, **args)  # type: ignore[arg-type]


def audits(store: Store, action: str) -> list[dict[str, object]]:
    return [{"target": e.target, "outcome": e.outcome, "actor": e.actor, **e.detail}
            for e in store.audit_tail(1000) if e.action == action]


def test_deletes_only_expired_acknowledged_files_and_keeps_every_row(
    tmp_path: Path, store: Store, clock: FakeClock
) -> None:
    states = ["sealed", "uploading", "quarantined", "acknowledged", "acknowledged", "acknowledged", "sealed",
              "acknowledged"]
    files = [add(store, tmp_path, seq, state, receipt=seq != 4) for seq, state in enumerate(states)]
    m = maintainer(tmp_path, store, clock, FakeDisk(tmp_path, 100_000))
    assert m.run_pass() is L.OK
    assert all(f.exists() for f in files)  # nothing has been kept 7 days yet
    clock.advance(7 * 86400)
    m.run_pass()
    # 3 and 5 go; 4 has no receipt; 7 is the chain head; the rest are not acknowledged.
    assert [f.exists() for f in files] == [True, True, True, False, True, False, True, True]
    assert len(store.segments()) == len(states)
    for seq in (3, 5):
        row = store.segment(seq)
        assert row is not None and row.state == "acknowledged" and row.local_deleted_utc_ns == clock.utc_ns()
    assert audits(store, "delete-local") == [
        {"target": f"segments/{seq:08d}.bce", "outcome": "ok", "actor": "storage", "seq": seq, "bytes": 100,
         "reason": "age", "free_bytes": 100_000 - 800} for seq in (3, 5)]
    status = m.get_status()
    assert status["last_retention"] == {"utc_ns": clock.utc_ns(), "files": 2, "bytes": 200, "failed": 0}
    assert (status["deleted_files_total"], status["free_bytes"]) == (2, 100_000 - 600)
    m.run_pass()  # nothing left to do, nothing done twice
    assert len(audits(store, "delete-local")) == 2


def test_low_space_frees_oldest_acknowledged_first(tmp_path: Path, store: Store, clock: FakeClock) -> None:
    for seq in range(6):
        add(store, tmp_path, seq, "acknowledged" if seq in (1, 2, 3, 4) else "sealed", size=300)
    disk = FakeDisk(tmp_path, 1800 + 700)  # 700 free; target 1050
    changes: list[Change] = []
    m = maintainer(tmp_path, store, clock, disk, changes=changes)
    assert m.run_pass() is L.OK  # freed 600 before judging: 1300 free
    assert [store.segment(q).local_deleted_utc_ns is not None for q in range(6)] == [  # type: ignore[union-attr]
        False, True, True, False, False, False]
    assert [a["reason"] for a in audits(store, "delete-local")] == ["space", "space"]
    assert changes == [] and audits(store, "storage-level") == []


def test_unacknowledged_footage_is_never_deleted_even_when_exhausted(
    tmp_path: Path, store: Store, clock: FakeClock
) -> None:
    files = [add(store, tmp_path, seq, state, size=400) for seq, state in enumerate(["sealed", "uploading",
                                                                                     "quarantined", "sealed"])]
    changes: list[Change] = []
    m = maintainer(tmp_path, store, clock, FakeDisk(tmp_path, 1650), changes=changes)
    clock.advance(365 * 86400)
    assert m.run_pass() is L.EXHAUSTED
    assert all(f.exists() for f in files)
    assert changes == [(L.OK, L.EXHAUSTED, 50)]
    assert m.get_status()["alarm"] == LEVEL_ALARMS[L.EXHAUSTED]


def test_each_level_change_is_audited_and_reported_once(tmp_path: Path, store: Store, clock: FakeClock) -> None:
    add(store, tmp_path, 0, "sealed", size=0)
    disk = FakeDisk(tmp_path, 2000)
    changes: list[Change] = []
    m = maintainer(tmp_path, store, clock, disk, changes=changes)
    for capacity in (2000, 900, 950, 1040, 150, 160, 1100, 1100):
        disk.capacity = capacity
        m.run_pass()
    assert changes == [(L.OK, L.LOW, 900), (L.LOW, L.FULL, 150), (L.FULL, L.OK, 1100)]
    records = audits(store, "storage-level")
    assert [(r["previous"], r["target"], r["free_bytes"]) for r in records] == [
        ("ok", "low", 900), ("low", "full", 150), ("full", "ok", 1100)]
    assert records[1]["alarm"] == "storage full: new recordings refused"
    assert records[1]["below_bytes"] == 200 and records[1]["actor"] == "storage"
    status = m.get_status()
    assert status["level"] == "ok" and status["alarm"] is None
    assert status["hours_left"] == round((1100 - 100) / 10 / 3600, 3)
    assert status["thresholds"]["warn_free_bytes"] == 1000


def test_a_failing_level_callback_is_retried_until_it_succeeds(
    tmp_path: Path, store: Store, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[Change] = []

    def flaky(old: StorageLevel, new: StorageLevel, free: int) -> None:
        calls.append((old, new, free))
        if len(calls) == 1:
            raise RuntimeError("recorder inbox closed")

    disk = FakeDisk(tmp_path, 150)
    m = maintainer(tmp_path, store, clock, disk, on_level=flaky)
    assert m.run_pass() is L.FULL
    assert "level callback" in caplog.text
    disk.capacity = 400
    assert m.run_pass() is L.CRITICAL
    m.run_pass()
    assert calls == [(L.OK, L.FULL, 150), (L.OK, L.CRITICAL, 400)]
    assert len(audits(store, "storage-level")) == 2  # the level did change twice


def test_a_file_that_cannot_be_deleted_is_audited_once_and_others_proceed(
    tmp_path: Path, store: Store, clock: FakeClock
) -> None:
    for seq in range(4):
        add(store, tmp_path, seq, "acknowledged" if seq < 3 else "sealed")
    os_calls = FailingUnlink({"00000001.bce"})
    m = maintainer(tmp_path, store, clock, FakeDisk(tmp_path, 10_000), os_calls=os_calls)
    clock.advance(8 * 86400)
    m.run_pass()
    m.run_pass()
    done = audits(store, "delete-local")
    assert [(a["seq"], a["outcome"]) for a in done] == [(1, "failed"), (0, "ok"), (2, "ok")]
    assert "Permission denied" in str(done[0]["error"])
    assert store.segment(1).local_deleted_utc_ns is None  # type: ignore[union-attr]
    assert m.get_status()["last_retention"]["failed"] == 1
    os_calls.names.clear()
    m.run_pass()
    assert store.segment(1).local_deleted_utc_ns is not None  # type: ignore[union-attr]


def test_a_file_already_gone_is_recorded_as_such(tmp_path: Path, store: Store, clock: FakeClock) -> None:
    add(store, tmp_path, 0, "acknowledged").unlink()  # as after a crash between unlink and mark
    add(store, tmp_path, 1, "sealed")
    m = maintainer(tmp_path, store, clock, FakeDisk(tmp_path, 10_000), keep_acknowledged_s=0.0)
    m.run_pass()
    (record,) = audits(store, "delete-local")
    assert record["already_absent"] is True and record["seq"] == 0
    assert m.get_status()["last_retention"]["bytes"] == 0


def test_a_failing_free_space_measurement_keeps_the_level_and_the_pass_raises(
    tmp_path: Path, store: Store, clock: FakeClock
) -> None:
    disk = FakeDisk(tmp_path, 150)
    m = maintainer(tmp_path, store, clock, disk)
    assert m.run_pass() is L.FULL
    disk.failures.append(StorageError(errno.EIO, "Reading free space: I/O error", str(tmp_path)))
    with pytest.raises(StorageError):
        m.run_pass()
    assert m.level is L.FULL


def test_the_thread_logs_a_failing_pass_once_and_carries_on(
    tmp_path: Path, store: Store, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    disk = FakeDisk(tmp_path, 150)
    disk.failures = [StorageError(errno.EIO, "Reading free space: I/O error", str(tmp_path)) for _ in range(3)]
    reached = threading.Event()

    def on_level(old: StorageLevel, new: StorageLevel, free: int) -> None:
        reached.set()

    m = maintainer(tmp_path, store, clock, disk, on_level=on_level, interval_s=0.001)
    caplog.set_level(logging.DEBUG, logger="agent.storage")
    m.start()
    try:
        assert reached.wait(10.0)
    finally:
        m.stop()
    assert disk.calls >= 4 and m.level is L.FULL
    failures = [r for r in caplog.records if "storage pass" in r.getMessage()]
    assert [r.levelno for r in failures] == [logging.ERROR, logging.DEBUG, logging.DEBUG]
    assert "I/O error" in str(failures[0].exc_info[1])  # type: ignore[index]
    assert m.get_status()["last_error"] is None


def test_stop_before_start_returns(tmp_path: Path, store: Store, clock: FakeClock) -> None:
    maintainer(tmp_path, store, clock, FakeDisk(tmp_path, 1)).stop()


def test_bad_arguments_are_refused(tmp_path: Path, store: Store, clock: FakeClock) -> None:
    for key in ("interval_s", "keep_acknowledged_s", "bytes_per_second"):
        bad: dict[str, Any] = {key: -1.0}
        with pytest.raises(ValueError):
            maintainer(tmp_path, store, clock, FakeDisk(tmp_path, 1), **bad)


def test_disk_bytes(tmp_path: Path) -> None:
    assert disk_bytes(tmp_path) >= free_bytes(tmp_path) > 0
    with pytest.raises(StorageError, match="Reading disk size") as info:
        disk_bytes(tmp_path / "missing")
    assert info.value.errno == errno.ENOENT


class FakeRing:
    """The background ring as storage sees it: files under background/ indexed in the store."""

    def __init__(self, store: Store, data_dir: Path) -> None:
        self.store, self.data_dir = store, data_dir
        self.removed: list[int] = []

    def add(self, seq: int, size: int) -> None:
        rel = f"background/{seq:08d}.bce"
        (self.data_dir / "background").mkdir(exist_ok=True)
        (self.data_dir / rel).write_bytes(b"x" * size)
        self.store.add_ring_entry(RingEntry(seq, rel, "b", 0, 0, seq, seq + 1, f"{seq:064x}", size))

    def entries(self) -> list[RingEntry]:
        return self.store.ring_entries()

    def remove(self, entries: list[RingEntry], why: str) -> int:
        for e in entries:
            (self.data_dir / e.path).unlink()
            self.store.ring_deleted(e.seq)
            self.removed.append(e.seq)
        return sum(e.bytes for e in entries)


def test_storage_pressure_frees_the_background_ring_before_acknowledged_evidence(
    tmp_path: Path, store: Store, clock: FakeClock
) -> None:
    for seq in range(4):
        add(store, tmp_path, seq, "acknowledged" if seq < 2 else "sealed", size=300)
    ring = FakeRing(store, tmp_path)
    for seq in range(3):
        ring.add(seq, 300)
    disk = FakeDisk(tmp_path, 1200 + 900 + 700)  # 700 free (ring files count as used); target 1050
    m = maintainer(tmp_path, store, clock, disk, ring=ring)
    assert m.run_pass() is L.OK
    assert ring.removed == [0, 1]  # 600 from the ring: 1300 free, past the target
    assert all(store.segment(q).local_deleted_utc_ns is None for q in range(4))  # type: ignore[union-attr]
    (freed,) = audits(store, "ring-free")
    assert (freed["entries"], freed["bytes"], freed["first_seq"], freed["last_seq"]) == (2, 600, 0, 1)
    # More pressure: the rest of the ring goes, then acknowledged evidence; unacknowledged never.
    disk.capacity -= 1000
    m.run_pass()
    assert ring.removed == [0, 1, 2]
    assert [store.segment(q).local_deleted_utc_ns is not None for q in range(4)] == [  # type: ignore[union-attr]
        True, True, False, False]
