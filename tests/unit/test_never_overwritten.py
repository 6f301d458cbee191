"""Issue 11, case 1 at the unit level: the data-dir lock, and no write path that can replace a sealed file."""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from agent.control import ControlServer
from agent.dirlock import DirLock, DirLockError
from agent.fsutil import StorageError, create_new_bytes, publish_new
from agent.recovery import recover
from tests.recorder_rig import Rig


def test_a_second_exclusive_holder_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    with DirLock(tmp_path, "bodycam run"):
        with pytest.raises(DirLockError) as caught:
            DirLock(tmp_path, "bodycam run").acquire()
        assert caught.value.holder_pid == os.getpid()
        assert f"in use by pid {os.getpid()} (bodycam run)" in str(caught.value)
        with pytest.raises(DirLockError):
            DirLock(tmp_path, "enroll", shared=True).acquire()
    with DirLock(tmp_path, "again") as again:  # released on close
        assert again.held
    assert (tmp_path / "bodycam.lock").stat().st_mode & 0o777 == 0o600


def test_shared_holders_coexist_and_exclude_an_exclusive_one(tmp_path: Path) -> None:
    a = DirLock(tmp_path, "enroll", shared=True).acquire()
    b = DirLock(tmp_path, "revoke", shared=True).acquire()
    with pytest.raises(DirLockError):
        DirLock(tmp_path, "keygen").acquire()
    a.close()
    b.close()
    DirLock(tmp_path, "keygen").acquire().close()


def test_the_lock_dies_with_its_process(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; from agent.dirlock import DirLock;"
         f"DirLock(Path({str(tmp_path)!r}), 'holder').acquire(); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(DirLockError) as caught:
            DirLock(tmp_path, "second").acquire()
        assert caught.value.holder_pid == holder.pid
        os.kill(holder.pid, signal.SIGKILL)  # a crash: no chance to release it
        holder.wait(10)
        DirLock(tmp_path, "after the crash").acquire().close()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)


def test_publish_new_never_replaces(tmp_path: Path) -> None:
    sealed = tmp_path / "0000000012.bcs"
    sealed.write_bytes(b"sealed evidence")
    part = tmp_path / "x.part"
    part.write_bytes(b"other bytes")
    with pytest.raises(StorageError) as caught:
        publish_new(part, sealed)
    assert caught.value.errno == errno.EEXIST
    assert sealed.read_bytes() == b"sealed evidence"
    assert part.read_bytes() == b"other bytes"  # kept for recovery to judge, never lost
    publish_new(part, tmp_path / "0000000013.bcs")
    assert not part.exists() and (tmp_path / "0000000013.bcs").read_bytes() == b"other bytes"


def test_create_new_bytes_never_replaces_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "0000000003.bcs"
    create_new_bytes(target, b"first")
    with pytest.raises(StorageError) as caught:
        create_new_bytes(target, b"second")
    assert caught.value.errno == errno.EEXIST
    assert target.read_bytes() == b"first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0000000003.bcs"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_chain_with_a_stale_head_cannot_overwrite_a_sealed_entry(tmp_path: Path) -> None:
    """The issue's corruption: a writer whose idea of the head is behind the files (a second agent took over)."""
    rig = Rig(tmp_path)
    stale = rig.restart_chain()  # believes the head is the boot event
    rig.chain.event("mark", {"n": 1})  # the live writer moves on: seq 1
    sealed = tmp_path / "segments" / "0000000001.bcs"
    digest = _sha(sealed)
    with pytest.raises(StorageError) as caught:
        stale.event("mark", {"n": 2})
    assert caught.value.errno == errno.EEXIST
    assert _sha(sealed) == digest
    # a segment sealed on a stale head is refused the same way, and its bytes stay for recovery
    seg = stale.open_segment(rig.clock.monotonic_ns(), rig.clock.utc_ns())
    seg.write(b"\x1a\x45\xdf\xa3" + b"\0" * 4000)
    seg.writer.checkpoint(rig.clock.monotonic_ns())
    with pytest.raises(StorageError):
        stale.seal(seg, mono_end_ns=rig.clock.monotonic_ns(), utc_end_ns=rig.clock.utc_ns(),
                   fields={"recording_id": None, "trigger": "test", "container": "matroska", "tracks": [],
                           "marks": []},
                   flags=[], sealed_meta=None)
    assert _sha(sealed) == digest
    assert seg.path.exists()


def test_recovery_drops_the_second_name_a_crash_left_while_publishing(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.chain.event("mark")
    sealed = tmp_path / "segments" / "0000000001.bcs"
    second = tmp_path / "segments" / "crash-between-link-and-unlink.part"
    os.link(sealed, second)
    digest = _sha(sealed)
    report = recover(tmp_path, rig.restart_chain(), rig.store)
    assert not second.exists()
    assert _sha(sealed) == digest
    assert report.quarantined == []  # the same bytes under a second name are not a mystery file
    assert [e.action for e in rig.store.audit_tail(5)].count("drop-second-name") == 1


def test_a_control_server_never_removes_a_socket_it_did_not_make(tmp_path: Path) -> None:
    path = tmp_path / "ctl.sock"
    first = ControlServer(path, lambda cmd, actor, args: {})
    first.start()
    os.unlink(path)  # as a second process taking the path would
    second = ControlServer(path, lambda cmd, actor, args: {})
    second.start()
    first.close()
    assert path.exists()
    second.close()
    assert not path.exists()
