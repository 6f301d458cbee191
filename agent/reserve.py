"""The space reserve: disk space held back so a full disk never keeps the unit from signing why.

When something else fills the data dir's file system, the recorder must still write the signed
events that explain the hole in the footage (``storage-full``, ``record-stop``, ``shutdown``,
``boot``) and their index rows. ``reserve.bin`` is a preallocated file of ``size_bytes`` that
holds that room: a writer on the event path whose write fails because the disk is full calls
:meth:`SpaceReserve.make_room`, which gives back one ``step_bytes`` slice (the file is truncated),
then tries once more (:func:`agent.fsutil.retry_when_full`). Footage never draws on it. The
storage maintainer counts the missing part of the reserve as used (:meth:`missing_bytes`) and
fills it again (:meth:`fill`) once the space is really free.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from pathlib import Path
from typing import Any

from agent import fsutil
from agent.fserrors import is_disk_full

log = logging.getLogger(__name__)

MIB = 2**20
RESERVE_NAME = "reserve.bin"
# A signed event is one small file plus a few SQLite pages in the WAL; a restart on a full disk
# also recreates the WAL and its shared-memory index. 1 MiB holds dozens of events with their
# index rows and audit records; 8 of them see a unit through several restarts on a full disk.
RESERVE_BYTES = 8 * MIB
RESERVE_STEP_BYTES = 1 * MIB


class ReserveError(Exception):
    """The reserve cannot be set up (the data dir's file system is full, or refuses the file)."""


class SpaceReserve:
    """A file of preallocated blocks released slice by slice when the disk is full.

    Thread contract: every method from any thread; one lock serialises changes to the file,
    so two writers that hit a full disk at once each get a slice of their own.
    """

    def __init__(self, path: Path, size_bytes: int = RESERVE_BYTES, step_bytes: int = RESERVE_STEP_BYTES) -> None:
        if not 0 < step_bytes <= size_bytes:
            raise ValueError("the reserve needs 0 < step_bytes <= size_bytes")
        self.path = path
        self.size_bytes = size_bytes
        self.step_bytes = step_bytes
        self._lock = threading.Lock()
        self._released_total = 0
        self._held = self._size_on_disk()

    def _size_on_disk(self) -> int:
        try:
            return min(self.path.stat().st_size, self.size_bytes)
        except FileNotFoundError:
            return 0
        except OSError as e:
            raise ReserveError(f"Reading the space reserve {self.path}: {e.strerror}") from e

    @property
    def held_bytes(self) -> int:
        with self._lock:
            return self._held

    @property
    def missing_bytes(self) -> int:
        """What the reserve lacks of its full size: space that is on loan, not free."""
        with self._lock:
            return self.size_bytes - self._held

    def fill(self) -> int:
        """Grow the file back towards ``size_bytes``, a step at a time, as far as the disk allows;
        return the bytes now held. Raises :class:`ReserveError` on an error other than a full disk."""
        with self._lock:
            if self._held >= self.size_bytes:
                return self._held
            before = self._held
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as e:
                if is_disk_full(e):
                    return self._held
                raise ReserveError(f"Creating the space reserve {self.path}: {e.strerror}") from e
            try:
                while self._held < self.size_bytes:
                    target = min(self.size_bytes, self._held + self.step_bytes)
                    try:
                        os.posix_fallocate(fd, self._held, target - self._held)
                    except OSError as e:
                        # a failed allocation may leave part of the step: keep whole steps only
                        with contextlib.suppress(OSError):
                            os.ftruncate(fd, self._held)
                        if is_disk_full(e):
                            break
                        raise ReserveError(f"Allocating the space reserve {self.path}: {e.strerror}") from e
                    self._held = target
                os.fsync(fd)
            except OSError as e:
                raise ReserveError(f"Syncing the space reserve {self.path}: {e.strerror}") from e
            finally:
                os.close(fd)
            if self._held == 0:
                with contextlib.suppress(OSError):
                    self.path.unlink()  # nothing could be set aside: leave nothing behind
            if self._held > before:
                log.info("space reserve: %d bytes held (%d added)", self._held, self._held - before)
            return self._held

    def make_room(self) -> bool:
        """Give back one step of the reserve; False when it is spent (or cannot be shrunk).

        For :func:`agent.fsutil.retry_when_full` on the event path, never for footage."""
        with self._lock:
            if self._held <= 0:
                return False
            target = max(0, self._held - self.step_bytes)
            try:
                os.truncate(self.path, target)
            except OSError as e:
                log.error("space reserve: cannot release %s: %s", self.path, e.strerror)
                return False
            self._released_total += self._held - target
            self._held = target
        log.warning("disk full: released %d bytes of the space reserve to sign events (%d bytes left)",
                    self.step_bytes, target)
        return True

    def get_status(self) -> dict[str, Any]:
        with self._lock:
            return {"path": self.path.name, "size_bytes": self.size_bytes, "held_bytes": self._held,
                    "released_bytes_total": self._released_total}


def no_room_message(data_dir: Path) -> str:
    """The one line for a unit that cannot start because its file system is full."""
    try:
        free = f"{fsutil.free_bytes(data_dir)} bytes free"
    except OSError as e:
        free = f"free space unknown: {e.strerror}"
    return (f"the file system holding {data_dir} is full ({free}; the unit needs {RESERVE_STEP_BYTES} bytes to "
            "sign its events): free space there (dock the unit so headquarters acknowledges footage, "
            "or remove other files) and start again; no evidence was touched")
