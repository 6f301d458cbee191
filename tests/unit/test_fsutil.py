"""Atomic file helpers: old-or-new content under failures, exact modes, wrapped errors."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from agent.fsutil import OsCalls, StorageError, atomic_rename, atomic_write_bytes, free_bytes, fsync_dir


class FailingOs(OsCalls):
    """Real system calls, except that the ``fail_at`` one raises (after ``after`` successes)."""

    def __init__(self, fail_at: str, err: int = errno.EIO, after: int = 0) -> None:
        self.fail_at = fail_at
        self.err = err
        self.after = after
        self.calls: list[str] = []

    def _maybe_fail(self, name: str) -> None:
        self.calls.append(name)
        if name == self.fail_at:
            if self.after == 0:
                raise OSError(self.err, os.strerror(self.err))
            self.after -= 1

    def open(self, path: str, flags: int, mode: int) -> int:
        self._maybe_fail("open")
        return super().open(path, flags, mode)

    def fchmod(self, fd: int, mode: int) -> None:
        self._maybe_fail("fchmod")
        super().fchmod(fd, mode)

    def write(self, fd: int, data: memoryview) -> int:
        self._maybe_fail("write")
        # Short writes, so a failure can land after part of the data is on disk.
        return super().write(fd, data[:3])

    def fsync(self, fd: int) -> None:
        self._maybe_fail("fsync")
        super().fsync(fd)

    def replace(self, src: str, dst: str) -> None:
        self._maybe_fail("replace")
        super().replace(src, dst)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_creates_file_with_mode_0600(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    atomic_write_bytes(target, b"hello")
    assert target.read_bytes() == b"hello"
    assert _mode(target) == 0o600


def test_mode_is_exact_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        atomic_write_bytes(tmp_path / "a", b"x", mode=0o644)
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a") == 0o644


def test_write_replaces_existing_content_and_narrows_mode(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old")
    target.chmod(0o644)
    atomic_write_bytes(target, b"new content")
    assert target.read_bytes() == b"new content"
    assert _mode(target) == 0o600


def test_short_writes_are_completed(tmp_path: Path) -> None:
    target = tmp_path / "f"
    atomic_write_bytes(target, b"0123456789", os_calls=FailingOs("never"))
    assert target.read_bytes() == b"0123456789"


@pytest.mark.parametrize(
    ("fail_at", "after"),
    [("open", 0), ("fchmod", 0), ("write", 0), ("write", 2), ("fsync", 0), ("replace", 0)],
)
def test_failure_before_rename_keeps_old_content_and_no_temp(tmp_path: Path, fail_at: str, after: int) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old content")
    with pytest.raises(StorageError) as info:
        atomic_write_bytes(target, b"new content that is longer", os_calls=FailingOs(fail_at, after=after))
    assert info.value.errno == errno.EIO
    assert target.read_bytes() == b"old content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_failure_on_directory_fsync_after_rename_has_new_content(tmp_path: Path) -> None:
    # fsync #1 is the file, #2 the directory: by then the rename has happened.
    target = tmp_path / "f"
    target.write_bytes(b"old")
    with pytest.raises(StorageError, match="Syncing directory"):
        atomic_write_bytes(target, b"new", os_calls=FailingOs("fsync", after=1))
    assert target.read_bytes() == b"new"


def test_crash_before_rename_leaves_old_content(tmp_path: Path) -> None:
    """A power cut between write and rename: the process never gets to clean up."""

    class Crash(BaseException):
        pass

    class CrashingOs(OsCalls):
        def replace(self, src: str, dst: str) -> None:
            raise Crash

    target = tmp_path / "f"
    target.write_bytes(b"old")
    with pytest.raises(Crash):
        atomic_write_bytes(target, b"new", os_calls=CrashingOs())
    assert target.read_bytes() == b"old"
    leftovers = [p for p in tmp_path.iterdir() if p.name != "f"]
    assert len(leftovers) == 1 and leftovers[0].read_bytes() == b"new"  # a stray .tmp, harmless


def test_errors_say_what_was_being_done(tmp_path: Path) -> None:
    with pytest.raises(StorageError) as info:
        atomic_write_bytes(tmp_path / "missing-dir" / "f", b"x")
    assert info.value.errno == errno.ENOENT
    assert "Creating temporary file" in str(info.value)
    assert isinstance(info.value, OSError)


def test_enospc_keeps_its_errno(tmp_path: Path) -> None:
    with pytest.raises(StorageError) as info:
        atomic_write_bytes(tmp_path / "f", b"x", os_calls=FailingOs("write", err=errno.ENOSPC))
    assert info.value.errno == errno.ENOSPC
    assert "Writing file atomically" in str(info.value)


def test_atomic_rename_moves_and_reports(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"A")
    (tmp_path / "sub").mkdir()
    atomic_rename(tmp_path / "a", tmp_path / "sub" / "b")
    assert (tmp_path / "sub" / "b").read_bytes() == b"A"
    assert not (tmp_path / "a").exists()
    with pytest.raises(StorageError) as info:
        atomic_rename(tmp_path / "nope", tmp_path / "b")
    assert info.value.errno == errno.ENOENT
    assert "Renaming" in str(info.value) and "nope" in str(info.value)


def test_atomic_rename_failure_leaves_both(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"A")
    (tmp_path / "b").write_bytes(b"B")
    with pytest.raises(StorageError):
        atomic_rename(tmp_path / "a", tmp_path / "b", os_calls=FailingOs("replace"))
    assert (tmp_path / "a").read_bytes() == b"A"
    assert (tmp_path / "b").read_bytes() == b"B"


def test_fsync_dir_and_errors(tmp_path: Path) -> None:
    fsync_dir(tmp_path)
    with pytest.raises(StorageError) as info:
        fsync_dir(tmp_path / "missing")
    assert info.value.errno == errno.ENOENT
    with pytest.raises(StorageError, match="Syncing directory"):
        fsync_dir(tmp_path, os_calls=FailingOs("fsync"))


def test_fsync_dir_tolerates_filesystems_that_cannot(tmp_path: Path) -> None:
    fsync_dir(tmp_path, os_calls=FailingOs("fsync", err=errno.EINVAL))


def test_free_bytes(tmp_path: Path) -> None:
    assert free_bytes(tmp_path) > 0
    with pytest.raises(StorageError, match="Reading free space"):
        free_bytes(tmp_path / "missing")
