"""Atomic, durable file helpers: write-then-rename, directory fsync, free space."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from pathlib import Path

StrPath = str | os.PathLike[str]


class StorageError(OSError):
    """A file operation failed; ``strerror`` says what was being done and why.

    ``errno`` and ``filename`` are those of the underlying ``OSError`` so callers can still
    tell ENOSPC from EIO.
    """


def _wrap(e: OSError, doing: str, path: StrPath, path2: StrPath | None = None) -> StorageError:
    second = None if path2 is None else os.fspath(path2)
    return StorageError(e.errno, f"{doing}: {e.strerror or e}", os.fspath(path), None, second)


class OsCalls:
    """The handful of system calls the helpers make: the seam tests use to fail one mid-way.

    Stateless; the default instance is shared. Subclass and override one method to inject a
    failure (a full disk on ``write``, EIO on ``fsync``, a crash before ``replace``...).
    """

    def open(self, path: str, flags: int, mode: int) -> int:
        return os.open(path, flags, mode)

    def fchmod(self, fd: int, mode: int) -> None:
        os.fchmod(fd, mode)

    def write(self, fd: int, data: memoryview) -> int:
        return os.write(fd, data)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def close(self, fd: int) -> None:
        os.close(fd)

    def replace(self, src: str, dst: str) -> None:
        os.replace(src, dst)

    def unlink(self, path: str) -> None:
        os.unlink(path)


_OS = OsCalls()


def fsync_dir(path: StrPath, *, os_calls: OsCalls = _OS) -> None:
    """Flush a directory's entries to disk, so a create or rename inside it survives power loss."""
    try:
        fd = os_calls.open(os.fspath(path), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, 0)
    except OSError as e:
        raise _wrap(e, "Opening directory to fsync", path) from e
    try:
        os_calls.fsync(fd)
    except OSError as e:
        # Some filesystems cannot fsync a directory; nothing more can be done there.
        if e.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise _wrap(e, "Syncing directory", path) from e
    finally:
        os_calls.close(fd)


def _write_all(fd: int, data: bytes, os_calls: OsCalls) -> None:
    view = memoryview(data)
    while view:
        written = os_calls.write(fd, view)
        if written <= 0:
            raise OSError(errno.EIO, "write returned no progress")
        view = view[written:]


def atomic_write_bytes(path: StrPath, data: bytes, mode: int = 0o600, *, os_calls: OsCalls = _OS) -> None:
    """Replace ``path`` with ``data``: afterwards the file holds either the old or the new content.

    Writes a temporary file in the same directory, fsyncs it, renames it over ``path`` and
    fsyncs the directory. ``mode`` is applied exactly (the umask does not narrow or widen it).
    On failure before the rename the temporary file is removed and the old content is untouched.
    """
    target = Path(path)
    tmp = str(target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp"))
    try:
        fd = os_calls.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    except OSError as e:
        raise _wrap(e, "Creating temporary file", tmp) from e
    try:
        try:
            os_calls.fchmod(fd, mode)
            _write_all(fd, data, os_calls)
            os_calls.fsync(fd)
        finally:
            os_calls.close(fd)
        os_calls.replace(tmp, str(target))
    except OSError as e:
        # The original error matters more; a stray .tmp left behind is harmless.
        with contextlib.suppress(OSError):
            os_calls.unlink(tmp)
        raise _wrap(e, "Writing file atomically", target) from e
    fsync_dir(target.parent, os_calls=os_calls)


def atomic_rename(src: StrPath, dst: StrPath, *, os_calls: OsCalls = _OS) -> None:
    """Rename ``src`` over ``dst`` and fsync the directories involved so the rename is durable."""
    try:
        os_calls.replace(os.fspath(src), os.fspath(dst))
    except OSError as e:
        raise _wrap(e, "Renaming", src, dst) from e
    src_dir, dst_dir = Path(src).parent, Path(dst).parent
    fsync_dir(dst_dir, os_calls=os_calls)
    if src_dir.resolve() != dst_dir.resolve():
        fsync_dir(src_dir, os_calls=os_calls)


def free_bytes(path: StrPath) -> int:
    """Bytes available to an unprivileged writer on the filesystem holding ``path``."""
    try:
        st = os.statvfs(os.fspath(path))
    except OSError as e:
        raise _wrap(e, "Reading free space", path) from e
    return st.f_bavail * st.f_frsize
