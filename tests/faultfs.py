"""A file-system fault layer for the segment files: lost unsynced writes, torn writes, EIO, ENOSPC.

``FaultPlan`` says what goes wrong; ``FaultyFiles`` is a ``FileOpener`` for ``ChainLog`` that hands
out ``FaultyFile``s following the plan, and remembers how much of each file was durable (synced)
so that ``power_cut`` can leave on disk exactly what a real power cut would: the synced prefix,
plus optionally a torn piece of what followed.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class FaultPlan:
    fail_write_after_bytes: int | None = None  # total bytes over all files before writes fail
    write_errno: int = errno.ENOSPC
    torn: bool = False  # the failing write puts part of its data down first
    fail_sync_on_call: int | None = None  # the Nth sync (1-based, over all files) fails with EIO
    files_affected: int = 1  # how many files the write fault hits before the disk "recovers"


@dataclass
class FaultyFiles:
    plan: FaultPlan
    written: int = 0
    syncs: int = 0
    write_faults: int = 0
    synced_size: dict[Path, int] = field(default_factory=dict)
    opened: list[Path] = field(default_factory=list)

    def __call__(self, path: Path) -> FaultyFile:
        self.opened.append(path)
        return FaultyFile(path, self)

    def power_cut(self, torn_tail_bytes: int = 0) -> None:
        """Lose every unsynced byte of every file still present; keep a torn tail if asked."""
        for path, synced in self.synced_size.items():
            if path.exists():
                size = path.stat().st_size
                os.truncate(path, min(size, synced + torn_tail_bytes))


class FaultyFile:
    """Unbuffered writes straight to the OS so the plan sees every byte; ``sync`` is fsync."""

    def __init__(self, path: Path, owner: FaultyFiles) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._path = path
        self._owner = owner
        self._failed_here = False
        owner.synced_size[path] = 0

    def write(self, data: bytes, /) -> int:
        o, plan = self._owner, self._owner.plan
        limit = plan.fail_write_after_bytes
        armed = limit is not None and (o.write_faults < plan.files_affected or self._failed_here)
        if armed and limit is not None and o.written + len(data) > limit:
            if not self._failed_here:
                o.write_faults += 1
                self._failed_here = True
            if plan.torn:
                keep = max(0, min(len(data) - 1, limit - o.written))
                os.write(self._fd, data[:keep])
                o.written += keep
            raise OSError(plan.write_errno, os.strerror(plan.write_errno), str(self._path))
        os.write(self._fd, data)
        o.written += len(data)
        return len(data)

    def flush(self) -> None:
        pass

    def sync(self) -> None:
        o = self._owner
        o.syncs += 1
        if o.plan.fail_sync_on_call is not None and o.syncs == o.plan.fail_sync_on_call:
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(self._path))
        os.fsync(self._fd)
        o.synced_size[self._path] = os.fstat(self._fd).st_size

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
