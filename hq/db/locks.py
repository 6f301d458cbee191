"""Per-device locks that serialise chain-position decisions for one unit across threads and, on
PostgreSQL, across headquarters nodes (session advisory locks)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from hq.db import HqIndexError

# pg_advisory_lock(class, object): the class says "device chain" ('bcdv'), the object is the id's hash.
DEVICE_LOCK_CLASS = 0x6263_6476
_POLL_S = 0.05


def device_key(device_id: str) -> int:
    """A stable signed 32-bit key for ``device_id`` (two ids may share one: they then take turns)."""
    return int.from_bytes(hashlib.sha256(device_id.encode("utf-8")).digest()[:4], "big", signed=True)


class DeviceLocks:
    """``hold(device_id)``: one holder per device at a time.

    PostgreSQL: a session advisory lock on a connection kept for the block, so every node
    sharing the database takes turns; if that connection is lost the server releases the lock
    (the block then no longer excludes others: keep blocks short and re-check state inside).
    SQLite: an exclusive ``flock`` on a small file per device beside the database
    (``<index>-locks/``), so threads and worker processes sharing the file take turns too; each
    write is still serialised by SQLite's own writer lock. Not re-entrant.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        database = engine.url.database
        self._dir = Path(f"{database}-locks") if engine.dialect.name == "sqlite" and database else None

    @contextlib.contextmanager
    def hold(self, device_id: str, timeout_s: float | None = None) -> Iterator[None]:
        """Hold ``device_id``'s lock for the block. ``timeout_s``: None waits as long as it takes,
        0 tries once; not acquired in time raises HqIndexError."""
        if self._engine.dialect.name == "postgresql":
            with self._pg(device_id, timeout_s):
                yield
            return
        with self._flock(device_id, timeout_s):
            yield

    @contextlib.contextmanager
    def _flock(self, device_id: str, timeout_s: float | None) -> Iterator[None]:
        assert self._dir is not None, "device locks need a database file"
        try:
            self._dir.mkdir(mode=0o700, exist_ok=True)
            fd = os.open(self._dir / f"{device_key(device_id) & 0xFFFFFFFF:08x}.lock",
                         os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise HqIndexError(f"locking {device_id}: {self._dir}: {exc.strerror}") from exc
        try:
            if timeout_s is None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            else:
                deadline = time.monotonic() + max(timeout_s, 0.0)
                while not _try_flock(fd):
                    if time.monotonic() >= deadline:
                        raise HqIndexError(f"{device_id} is busy (another ingest holds its chain lock)")
                    time.sleep(_POLL_S)
            yield
        finally:
            os.close(fd)  # releases the lock

    @contextlib.contextmanager
    def _pg(self, device_id: str, timeout_s: float | None) -> Iterator[None]:
        key = device_key(device_id)
        try:
            conn = self._engine.connect()
        except sa.exc.SQLAlchemyError as exc:
            raise HqIndexError(f"locking {device_id}: {exc.orig if hasattr(exc, 'orig') else exc}") from exc
        try:
            if not self._pg_acquire(conn, key, timeout_s):
                raise HqIndexError(f"{device_id} is busy (another node holds its chain lock)")
            try:
                yield
            finally:
                try:
                    conn.execute(sa.select(sa.func.pg_advisory_unlock(DEVICE_LOCK_CLASS, key)))
                    conn.commit()
                except sa.exc.SQLAlchemyError:
                    conn.invalidate()  # never hand back a connection that may still hold the lock
        finally:
            conn.close()

    @staticmethod
    def _pg_acquire(conn: sa.Connection, key: int, timeout_s: float | None) -> bool:
        try:
            if timeout_s is None:
                conn.execute(sa.select(sa.func.pg_advisory_lock(DEVICE_LOCK_CLASS, key)))
                conn.commit()
                return True
            deadline = time.monotonic() + max(timeout_s, 0.0)
            while True:
                got = conn.execute(sa.select(sa.func.pg_try_advisory_lock(DEVICE_LOCK_CLASS, key))).scalar()
                conn.commit()
                if got:
                    return True
                if time.monotonic() >= deadline:
                    return False
                time.sleep(_POLL_S)
        except sa.exc.SQLAlchemyError as exc:
            raise HqIndexError(f"taking a device lock: {getattr(exc, 'orig', exc)}") from exc


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
