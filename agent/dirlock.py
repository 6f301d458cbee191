"""An exclusive (or shared) advisory lock on a data directory, held for the life of a process."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path
from types import TracebackType
from typing import Self

LOCK_NAME = "bodycam.lock"


class DirLockError(Exception):
    """The directory is held by another process, or its lock file cannot be used; the message says which."""

    def __init__(self, message: str, *, holder_pid: int | None = None, errno_: int | None = None) -> None:
        super().__init__(message)
        self.holder_pid = holder_pid
        self.errno = errno_


def _holder(path: Path) -> tuple[int | None, str]:
    """The PID and purpose the last exclusive holder wrote into the lock file (None and "" if none)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None, ""
    first, _, purpose = text.partition(" ")
    try:
        return int(first), purpose.strip()[:80]
    except ValueError:
        return None, ""


def _lock_owners(path: Path, proc_locks: Path = Path("/proc/locks")) -> list[int]:
    """PIDs holding a ``flock`` on ``path`` according to the kernel (empty where /proc/locks is absent)."""
    try:
        st = os.stat(path)
        lines = proc_locks.read_text().splitlines()
    except OSError:
        return []
    # "1: FLOCK  ADVISORY  WRITE 1234 08:02:131 0 EOF": major and minor in hex, the inode in decimal
    wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    owners = []
    for line in lines:
        fields = line.split()
        if "FLOCK" in fields and wanted in fields:
            with contextlib.suppress(ValueError, IndexError):
                owners.append(int(fields[fields.index(wanted) - 1]))
    return sorted(set(owners))


def _describe_holders(path: Path) -> tuple[int | None, str]:
    """Who holds the lock, for a refusal: the kernel's word first, the file's as a fallback."""
    owners = _lock_owners(path)
    pid, purpose = _holder(path)
    if owners and pid not in owners:
        pid, purpose = owners[0], ""
    if pid is None:
        return None, "another process"
    text = f"pid {pid}" + (f" ({purpose})" if purpose else "")
    others = [o for o in owners if o != pid]
    if others:
        text += " and pid " + ", ".join(str(o) for o in others)
    return pid, text


class DirLock:
    """``flock`` on ``<dir>/bodycam.lock``, taken at once (never waits) and released on ``close()``.

    Why: two processes writing one data dir fork the hash chain and overwrite each other's files;
    the lock makes the second one refuse before it reads or writes anything. ``flock`` belongs to
    the open file description, so the kernel drops it when the process dies, however it dies:
    a lock file left behind by a crash never blocks the next start. The descriptor is
    close-on-exec, so child processes (encoders, helpers) never inherit the lock.

    ``shared=True`` takes a shared lock: many holders may share it, an exclusive holder excludes
    them all. The holder writes ``<pid> <purpose>`` into the file (exclusive holders only) so a
    refusal can name it. Not thread-safe; one instance per process and directory.
    """

    def __init__(self, directory: Path, purpose: str, *, shared: bool = False, name: str = LOCK_NAME) -> None:
        self.path = directory / name
        self.purpose = purpose
        self.shared = shared
        self._fd: int | None = None

    def acquire(self) -> Self:
        """Take the lock or raise ``DirLockError`` naming the PID that holds it."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise DirLockError(
                f"cannot create the lock file {self.path}: {exc.strerror}", errno_=exc.errno
            ) from exc
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise DirLockError(f"locking {self.path}: {exc.strerror}", errno_=exc.errno) from exc
            pid, who = _describe_holders(self.path)
            raise DirLockError(
                f"{self.path.parent} is in use by {who}: stop that process first"
                " (two processes on one data dir would fork the chain)",
                holder_pid=pid,
            ) from None
        self._fd = fd
        if not self.shared:
            # Best effort: the lock itself is the guarantee; the PID only makes a refusal readable.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()} {self.purpose}\n".encode(), 0)
        return self

    @property
    def held(self) -> bool:
        return self._fd is not None

    def close(self) -> None:
        """Release the lock (the file stays: removing it would race with the next holder)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
