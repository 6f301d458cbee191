"""One line for a user when a file system refuses a command: what is wrong and what to do."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

# SQLite's primary result codes for the same conditions (sqlite3.Error.sqlite_errorcode & 0xff)
_SQLITE_READONLY = 8
_SQLITE_FULL = 13
_SQLITE_CANTOPEN = 14


def _errno_of(exc: BaseException) -> int | None:
    """The errno behind ``exc`` or the exceptions it was raised from (SQLite codes mapped to errno)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno is not None:
            return seen.errno
        if isinstance(seen, sqlite3.Error):
            code = getattr(seen, "sqlite_errorcode", 0) & 0xFF
            if code == _SQLITE_READONLY:
                return errno.EROFS
            if code == _SQLITE_FULL:
                return errno.ENOSPC
            if code == _SQLITE_CANTOPEN:
                return errno.EACCES
        seen = seen.__cause__ or seen.__context__
    return None


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error it was raised from) says the disk is full: ENOSPC or EDQUOT
    from the OS, SQLITE_FULL from SQLite (which the store wraps in its own error)."""
    return _errno_of(exc) in (errno.ENOSPC, errno.EDQUOT)


def explain(exc: BaseException, where: Path, *, option: str = "--data-dir") -> str:
    """A one-line message for a failed file operation under ``where``, with advice for the usual causes."""
    what = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    code = _errno_of(exc)
    if code == errno.EROFS:
        return (f"{where} is on a read-only file system ({what}): remount it read-write"
                f" (mount -o remount,rw) or choose another {option}")
    if code in (errno.ENOSPC, errno.EDQUOT):
        return (f"the file system holding {where} is full ({what}): free space on it"
                " (df -h shows which), then start again")
    if code in (errno.EACCES, errno.EPERM):
        return f"permission denied ({what}): run as the user that owns {where}, or fix its ownership"
    return what
