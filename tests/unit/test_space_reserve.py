"""The space reserve and the event path on a full disk (issue 11, case 3), without a real full disk."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from agent.fserrors import is_disk_full
from agent.fsutil import StorageError, retry_when_full
from agent.recorder import CommandError
from agent.reserve import SpaceReserve
from agent.storage import StorageLevel, StorageMaintainer, StorageThresholds
from agent.store import Store, StoreError
from tests.fakes import FakeClock
from tests.recorder_rig import Rig

KIB = 1024
T = StorageThresholds(1000 * KIB, 500 * KIB, 200 * KIB, 100 * KIB, hysteresis_bytes=10 * KIB)


def enospc() -> StorageError:
    return StorageError(errno.ENOSPC, "Writing file atomically: No space left on device", "x")


# ---- the reserve ---------------------------------------------------------------------------------


def test_the_reserve_is_filled_released_a_step_at_a_time_and_filled_again(tmp_path: Path) -> None:
    reserve = SpaceReserve(tmp_path / "reserve.bin", size_bytes=64 * KIB, step_bytes=16 * KIB)
    assert reserve.held_bytes == 0 and reserve.missing_bytes == 64 * KIB
    assert reserve.fill() == 64 * KIB
    assert (tmp_path / "reserve.bin").stat().st_size == 64 * KIB
    assert reserve.make_room() and reserve.make_room()
    assert (tmp_path / "reserve.bin").stat().st_size == 32 * KIB and reserve.missing_bytes == 32 * KIB
    assert reserve.make_room() and reserve.make_room()
    assert not reserve.make_room()  # spent
    assert reserve.get_status()["released_bytes_total"] == 64 * KIB
    assert reserve.fill() == 64 * KIB and reserve.missing_bytes == 0
    # a new process finds what the last one left
    assert reserve.make_room()
    assert SpaceReserve(tmp_path / "reserve.bin", size_bytes=64 * KIB, step_bytes=16 * KIB).held_bytes == 48 * KIB


def test_full_disk_errors_are_recognised_through_wrappers() -> None:
    try:
        try:
            raise sqlite3.OperationalError("database or disk is full")
        except sqlite3.OperationalError as e:
            e.sqlite_errorcode = 13  # what SQLite sets for SQLITE_FULL
            raise StoreError("Auditing stop: database or disk is full") from e
    except StoreError as wrapped:
        assert is_disk_full(wrapped)
    assert is_disk_full(enospc())
    assert not is_disk_full(StorageError(errno.EIO, "I/O error", "x"))
    assert not is_disk_full(ValueError("nothing to do with disks"))


def test_a_write_on_a_full_disk_is_tried_again_after_each_step_until_the_reserve_is_spent() -> None:
    calls: list[str] = []
    room = [True, True]

    def make_room() -> bool:
        calls.append("room")
        return room.pop(0) if room else False

    def write_ok_on_third() -> str:
        calls.append("write")
        if calls.count("write") < 3:
            raise enospc()
        return "written"

    assert retry_when_full(write_ok_on_third, make_room) == "written"
    assert calls == ["write", "room", "write", "room", "write"]

    with pytest.raises(StorageError):
        retry_when_full(lambda: (_ for _ in ()).throw(enospc()), lambda: False)
    eio_rooms: list[int] = []
    with pytest.raises(StorageError):  # not a full disk: no room is made, nothing retried
        retry_when_full(lambda: (_ for _ in ()).throw(StorageError(errno.EIO, "I/O", "x")),
                        lambda: eio_rooms.append(1) is None)
    assert not eio_rooms


# ---- the maintainer counts the reserve -------------------------------------------------------------


class Disk:
    """Free space that the test sets, minus what the reserve file holds."""

    def __init__(self, reserve_path: Path, free_bytes: int) -> None:
        self.reserve_path, self.free = reserve_path, free_bytes

    def __call__(self, path: Path) -> int:
        held = self.reserve_path.stat().st_size if self.reserve_path.exists() else 0
        return self.free - held


def test_released_reserve_counts_as_used_and_is_filled_again_once_space_returns(tmp_path: Path) -> None:
    reserve = SpaceReserve(tmp_path / "reserve.bin", size_bytes=64 * KIB, step_bytes=16 * KIB)
    reserve.fill()
    disk = Disk(tmp_path / "reserve.bin", free_bytes=64 * KIB + 20 * KIB)  # 20 KiB free beside the reserve
    changes: list[tuple[StorageLevel, StorageLevel, int]] = []
    with Store(tmp_path / "index.sqlite", FakeClock()) as store:
        m = StorageMaintainer(tmp_path, store, FakeClock(), T, 0.0, 60.0, lambda *c: changes.append(c),
                              bytes_per_second=10.0, free_bytes=disk, reserve=reserve)
        assert m.run_pass() is StorageLevel.EXHAUSTED
        reserve.make_room()  # 16 KiB released to sign events, which take it: on loan, not free
        disk.free -= 16 * KIB
        assert m.run_pass() is StorageLevel.EXHAUSTED and m.get_status()["free_bytes"] == 4 * KIB
        assert reserve.missing_bytes == 16 * KIB  # not enough room yet to take it back
        disk.free = 64 * KIB + 2000 * KIB  # something else freed its files
        assert m.run_pass() is StorageLevel.OK
        assert reserve.missing_bytes == 0 and m.get_status()["free_bytes"] == 2000 * KIB
        assert m.get_status()["reserve"]["held_bytes"] == 64 * KIB
        # a space fault makes the next pass report its level even though it did not change
        n = len(changes)
        m.run_pass()
        assert len(changes) == n
        m.space_fault()
        m.run_pass()
        assert changes[-1][1] is StorageLevel.OK and len(changes) == n + 1


# ---- the recorder on a full disk --------------------------------------------------------------------


class FullStore(Store):
    """A store whose event rows and audit records fail as on a full disk once ``full`` is set."""

    full = False

    def _refuse(self) -> None:
        if self.full:
            e = sqlite3.OperationalError("database or disk is full")
            e.sqlite_errorcode = 13  # SQLITE_FULL
            raise StoreError("database or disk is full") from e

    def audit(self, *args: Any, **kwargs: Any) -> int:
        self._refuse()
        return super().audit(*args, **kwargs)

    def record_event_entry(self, *args: Any, **kwargs: Any) -> None:
        self._refuse()
        super().record_event_entry(*args, **kwargs)


def test_a_command_is_answered_even_when_its_audit_record_cannot_be_written(tmp_path: Path) -> None:
    rig = Rig(tmp_path, pre_event_s=0, store_class=FullStore)
    assert isinstance(rig.store, FullStore)
    rig.store.full = True
    rig.rec.start(resume_recording=False)
    try:
        assert rig.rec.command("status", "test", timeout_s=5.0)["state"] == "ready"
        with pytest.raises(CommandError):  # refused, and said so, not a timeout
            rig.rec.command("stop", "test", timeout_s=5.0)
    finally:
        rig.rec.stop(timeout_s=5.0)
    assert not rig.rec.alive


def test_stop_and_shutdown_finish_when_their_events_cannot_be_signed(tmp_path: Path) -> None:
    rig = Rig(tmp_path, pre_event_s=0, segment_s=2, store_class=FullStore)
    assert isinstance(rig.store, FullStore)
    rig.rec.step_command("start")
    rig.tick(25)
    rig.store.full = True  # and the reserve is spent: record-stop cannot be indexed
    rig.rec.step_command("stop")
    status = rig.rec.status()
    assert status["state"] == "ready" and status["recording_id"] is None
    # signed and on disk, so the chain head: the index row waits for room
    head = status["chain"]["head_seq"]
    assert rig.manifests()[-1]["event"] == "record-stop" and rig.manifests()[-1]["seq"] == head
    assert rig.store.segment(head) is None
    rig.tick(20)  # no segment is opened for a recording that ended, and nothing raises
    assert rig.rec.status()["segment"] is None
    rig.store.full = False
    rig.rec.step_command("start")
    assert rig.store.segment(head) is not None  # indexed, in order, by the next entry
    assert rig.store.chain_head("unit-r") == (head + 1, rig.chain.head_hash)
    rig.tick(5)
    rig.store.full = True
    rig.rec.step_shutdown()  # returns: the thread would end and SIGTERM stays prompt
    assert rig.rec.status()["state"] == "off"
