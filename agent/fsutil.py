"""Atomic, durable file helpers: write-then-rename, rename that never replaces, directory fsync,
free space, and writing again once room is made on a full disk."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import hashlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, Protocol, TypeVar, runtime_checkable

from agent.fserrors import is_disk_full

StrPath = str | os.PathLike[str]
T = TypeVar("T")


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

    def rename_noreplace(self, src: str, dst: str) -> None:
        _rename_noreplace(src, dst)


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


def _write_temp(target: Path, data: bytes, mode: int, os_calls: OsCalls) -> str:
    """Write ``data`` to a new temporary file beside ``target``, fsynced; return its name."""
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
    except OSError as e:
        # The original error matters more; a stray .tmp left behind is harmless.
        with contextlib.suppress(OSError):
            os_calls.unlink(tmp)
        raise _wrap(e, "Writing file atomically", target) from e
    return tmp


def atomic_write_bytes(path: StrPath, data: bytes, mode: int = 0o600, *, os_calls: OsCalls = _OS) -> None:
    """Replace ``path`` with ``data``: afterwards the file holds either the old or the new content.

    Writes a temporary file in the same directory, fsyncs it, renames it over ``path`` and
    fsyncs the directory. ``mode`` is applied exactly (the umask does not narrow or widen it).
    On failure before the rename the temporary file is removed and the old content is untouched.
    Never use it for evidence: ``create_new_bytes`` cannot replace a file.
    """
    target = Path(path)
    tmp = _write_temp(target, data, mode, os_calls)
    try:
        os_calls.replace(tmp, str(target))
    except OSError as e:
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


_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


def _renameat2() -> Callable[..., int] | None:
    try:
        func = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return None
    func.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
    func.restype = ctypes.c_int
    return func  # type: ignore[no-any-return]


_RENAMEAT2 = _renameat2()


def _rename_noreplace(src: str, dst: str) -> None:
    """Rename ``src`` to ``dst`` atomically, failing with EEXIST if ``dst`` exists.

    ``renameat2(RENAME_NOREPLACE)`` where the C library and the file system have it; otherwise
    ``link`` then ``unlink``, which cannot replace either (a crash in between leaves two names
    for one inode, which recovery recognises).
    """
    if _RENAMEAT2 is not None:
        if _RENAMEAT2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise OSError(err, os.strerror(err), src, None, dst)
    os.link(src, dst)
    os.unlink(src)


def publish_new(src: StrPath, dst: StrPath, *, os_calls: OsCalls = _OS) -> None:
    """Give a finished file its final name, never replacing a file already there, durably.

    Evidence files are published with this: a sealed entry is never overwritten, whatever the
    caller believes the chain head to be. Raises ``StorageError`` with errno EEXIST if ``dst``
    exists.
    """
    try:
        os_calls.rename_noreplace(os.fspath(src), os.fspath(dst))
    except FileExistsError as e:
        raise StorageError(
            errno.EEXIST, f"Refusing to replace {os.fspath(dst)}: it already exists", os.fspath(dst)
        ) from e
    except OSError as e:
        raise _wrap(e, "Renaming", src, dst) from e
    fsync_dir(Path(dst).parent, os_calls=os_calls)
    if Path(src).parent.resolve() != Path(dst).parent.resolve():
        fsync_dir(Path(src).parent, os_calls=os_calls)


def create_new_bytes(path: StrPath, data: bytes, mode: int = 0o600, *, os_calls: OsCalls = _OS) -> None:
    """Write ``data`` as a new file at ``path`` durably; never replaces an existing file.

    Like ``atomic_write_bytes`` (a temporary file, fsynced, then renamed), but the rename refuses
    to replace: a ``StorageError`` with errno EEXIST if ``path`` exists, which is left untouched.
    """
    target = Path(path)
    tmp = _write_temp(target, data, mode, os_calls)
    try:
        publish_new(tmp, target, os_calls=os_calls)
    except OSError:
        with contextlib.suppress(OSError):
            os_calls.unlink(tmp)
        raise


def free_bytes(path: StrPath) -> int:
    """Bytes available to an unprivileged writer on the filesystem holding ``path``; 0 when it
    has no inode left (nothing new can be created there, however many blocks are free)."""
    try:
        st = os.statvfs(os.fspath(path))
    except OSError as e:
        raise _wrap(e, "Reading free space", path) from e
    if st.f_files and not st.f_favail:
        return 0
    return st.f_bavail * st.f_frsize


def no_room() -> bool:
    """A ``make_room`` for writers without a space reserve: nothing can be freed."""
    return False


def retry_when_full(write: Callable[[], T], make_room: Callable[[], bool]) -> T:
    """Call ``write``; while it fails because the disk is full and ``make_room()`` frees some
    space (it returns False once it cannot), call it again. ``write`` must leave nothing half
    done when it raises (a rolled-back transaction, an atomic write), so calling it again is safe."""
    while True:
        try:
            return write()
        except Exception as exc:
            if not is_disk_full(exc) or not make_room():
                raise


@runtime_checkable
class MakesRoom(Protocol):
    """An object whose writes may free space first (the store)."""

    def _make_room(self) -> bool: ...


P = ParamSpec("P")
R = TypeVar("R")


def room_when_full(method: Callable[P, R]) -> Callable[P, R]:
    """A method whose write, failing with the disk full, is rolled back whole and run again after
    its object's ``_make_room`` freed some space (:func:`retry_when_full`)."""

    @functools.wraps(method)
    def write(*args: P.args, **kwargs: P.kwargs) -> R:
        owner = args[0]
        assert isinstance(owner, MakesRoom)
        return retry_when_full(lambda: method(*args, **kwargs), owner._make_room)

    return write


def file_sha256(path: Path) -> str:
    """SHA-256 hex of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1024 * 1024):
            h.update(block)
    return h.hexdigest()
