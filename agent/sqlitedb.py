"""One SQLite file for an evidence index (the unit's store; headquarters has hq/db/): created 0600,
WAL, synchronous=FULL, foreign keys on, one lock, IMMEDIATE transactions, errors wrapped."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlite_utils import Database

ErrorType = Callable[[str], Exception]  # the owner's exception type, built from a message


class SqliteFile:
    """An evidence index's connection and the rules every such file follows.

    Thread contract: one connection (``check_same_thread=False``, autocommit: transactions are
    only the explicit ones) guarded by one re-entrant lock, held by :meth:`transaction` and
    :meth:`reading` for their whole block, so callers on several threads are serialised and
    each write is one transaction. Other processes may read the file concurrently (WAL);
    ``busy_timeout_s`` is how long a write waits for another process's lock (0: fail at once).
    Every ``sqlite3.Error`` comes out as ``error(message)``, the message saying what was being
    done; ``what`` names the file in messages ("store", "index").
    """

    def __init__(self, path: str | os.PathLike[str], what: str, error: ErrorType, *, busy_timeout_s: float) -> None:
        self.path = Path(path)
        self.what = what
        self.lock = threading.RLock()
        self._error = error
        try:
            # Create it 0600 before SQLite does; SQLite gives -wal and -shm the same mode.
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
            os.chmod(self.path, 0o600)
        except OSError as e:
            raise error(f"Creating {what} {self.path}: {e.strerror}") from e
        doing = f"Opening {what} {self.path}"
        try:
            conn = sqlite3.connect(self.path, timeout=busy_timeout_s, check_same_thread=False,
                                   isolation_level=None)
        except sqlite3.Error as e:
            raise error(f"{doing}: {e}") from e
        self._db: Database | None = Database(conn, execute_plugins=False)
        try:
            self._configure(self._db, doing)
        except BaseException as e:
            self.close()
            if isinstance(e, sqlite3.Error):
                raise error(f"{doing}: {e}") from e
            raise

    def _configure(self, db: Database, doing: str) -> None:
        db.enable_wal()
        if db.journal_mode != "wal":
            raise self._error(f"{doing}: WAL refused (journal_mode={db.journal_mode})")
        db.conn.execute("PRAGMA synchronous=FULL")  # evidence index: durability over speed
        db.conn.execute("PRAGMA foreign_keys=ON")
        if db.conn.execute("PRAGMA foreign_keys").fetchone()[0] != 1:
            raise self._error(f"{doing}: SQLite without foreign key support")

    def close(self) -> None:
        """Close the connection; idempotent. Later calls raise the owner's error."""
        with self.lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _open_db(self, doing: str) -> Database:
        if self._db is None:
            raise self._error(f"{doing}: {self.what} {self.path} is closed")
        return self._db

    @contextlib.contextmanager
    def transaction(self, doing: str) -> Iterator[Database]:
        """Hold the lock and one IMMEDIATE transaction: all of the block, or none of it."""
        with self.lock:
            db = self._open_db(doing)
            try:
                db.conn.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                except BaseException:
                    _rollback(db)
                    raise
                db.conn.execute("COMMIT")
            except sqlite3.Error as e:
                _rollback(db)
                raise self._error(f"{doing}: {e}") from e

    @contextlib.contextmanager
    def reading(self, doing: str) -> Iterator[Database]:
        """Hold the lock for a read (no transaction); errors wrapped."""
        with self.lock:
            db = self._open_db(doing)
            try:
                yield db
            except sqlite3.Error as e:
                raise self._error(f"{doing}: {e}") from e

    def rows(self, doing: str, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """The rows of one query, as dicts."""
        with self.reading(doing) as db:
            return list(db.query(sql, params))

    def user_version(self, doing: str = "Reading schema version") -> int:
        with self.reading(doing) as db:
            return int(db.conn.execute("PRAGMA user_version").fetchone()[0])


def _rollback(db: Database) -> None:
    if db.conn.in_transaction:
        db.conn.execute("ROLLBACK")
