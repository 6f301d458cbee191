"""Engines for the index: SQLite (the embedded default, WAL, busy timeout, file 0600) or PostgreSQL
through psycopg 3; URLs shown only with the password masked."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine

from hq.db import HqIndexError

# Set on the engine used for writes: SQLite then begins with BEGIN IMMEDIATE (the writer lock up
# front, so two writers never deadlock upgrading a read lock); reads begin DEFERRED.
WRITE_OPTION = "bodycam_write"
DEFAULT_NAME = "index.sqlite"
ENV_URL = "BODYCAM_HQ_DATABASE_URL"


def default_url(data_dir: Path) -> str:
    """The embedded index: ``sqlite:///<data-dir>/index.sqlite``."""
    return f"sqlite:///{data_dir / DEFAULT_NAME}"


def parse_url(text: str) -> URL:
    """``text`` as a URL; ``postgresql://`` means psycopg 3. One clear error for anything else."""
    try:
        url = sa.make_url(text)
    except sa.exc.ArgumentError as exc:
        raise HqIndexError(f"--database-url {mask(text)!r} is not a database URL: use "
                           "sqlite:///PATH or postgresql+psycopg://USER@HOST:PORT/DB") from exc
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    if url.drivername not in ("sqlite", "sqlite+pysqlite", "postgresql+psycopg"):
        raise HqIndexError(f"--database-url {mask(text)!r}: only sqlite:///PATH and postgresql+psycopg:// "
                           "are supported")
    if url.get_backend_name() == "sqlite" and not url.database:
        raise HqIndexError("--database-url sqlite:// needs a file (sqlite:///PATH): "
                           "an in-memory index holds no evidence")
    return url


def mask(url: str | URL) -> str:
    """The URL with its password replaced by ``***``: for messages and logs."""
    try:
        parsed = sa.make_url(url) if isinstance(url, str) else url
    except sa.exc.ArgumentError:
        return "<unparsable URL>"
    return parsed.render_as_string(hide_password=True)


def make_engine(url: URL, busy_timeout_s: float = 10.0) -> Engine:
    """An engine for ``url``. SQLite: the file is created 0600 before SQLite opens it, WAL,
    synchronous=FULL, foreign keys on, writers wait ``busy_timeout_s`` for each other.
    PostgreSQL: connections checked before use (a node outlives database restarts); passwords come
    from libpq (PGPASSFILE, ~/.pgpass, PGPASSWORD), or the URL."""
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url, busy_timeout_s)
    return sa.create_engine(url, pool_pre_ping=True, pool_size=8, max_overflow=8)


def _sqlite_engine(url: URL, busy_timeout_s: float) -> Engine:
    path = Path(str(url.database))
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
        os.chmod(path, 0o600)  # SQLite gives -wal and -shm the same mode
    except OSError as exc:
        raise HqIndexError(f"Creating index {path}: {exc.strerror}") from exc
    engine = sa.create_engine(url, connect_args={"timeout": busy_timeout_s, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _configure(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # transactions are only the ones begun below
        cur = dbapi_conn.cursor()
        try:
            mode = cur.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise HqIndexError(f"Opening index {path}: WAL refused (journal_mode={mode})")
            cur.execute("PRAGMA synchronous=FULL")  # evidence index: durability over speed
            cur.execute("PRAGMA foreign_keys=ON")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def is_sqlite(engine: Engine | Connection) -> bool:
    return engine.dialect.name == "sqlite"
