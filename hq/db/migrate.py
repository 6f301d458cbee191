"""Applying the index's Alembic migrations programmatically (no alembic.ini at run time), adopting
index files made before migrations existed, and refusing a database that is behind."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

from hq.db import HqIndexError
from hq.db.engine import WRITE_OPTION, mask
from hq.db.tx import reason

MIGRATIONS = Path(__file__).parent / "migrations"
# Index files made before migrations carry no alembic_version table: the first release's
# (PRAGMA user_version 1) has exactly revision 0001's schema; the next one's (2) adds only upload
# states, which revision 0004 adds too. Both are stamped 0001 and upgraded from there.
LEGACY_USER_VERSIONS = (1, 2)
LEGACY_REVISION = "0001"
# Set after Alembic takes over, so code from before migrations refuses the file instead of using it.
MANAGED_USER_VERSION = 3
# pg_advisory_xact_lock key: two nodes migrating at once take turns.
_MIGRATE_LOCK_KEY = 0x6263_6D69_6772_0001


def _config(conn: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if conn is not None:
        cfg.attributes["connection"] = conn
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None, "the package ships no migration"
    return head


def current_revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def _known(revision: str) -> bool:
    try:
        return ScriptDirectory.from_config(_config()).get_revision(revision) is not None
    except Exception:  # alembic raises several types for an unknown revision id
        return False


def status(engine: Engine) -> tuple[str | None, str]:
    """(the database's revision, or None when it has none yet; the package's head)."""
    try:
        with engine.connect() as conn:
            current = current_revision(conn)
            if current is None and engine.dialect.name == "sqlite" and _legacy_sqlite(conn):
                current = "legacy"
    except sa.exc.SQLAlchemyError as exc:
        raise HqIndexError(f"Reading the schema revision of {mask(engine.url)}: {reason(exc)}") from exc
    return current, head_revision()


def _legacy_sqlite(conn: Connection) -> bool:
    version = int(conn.exec_driver_sql("PRAGMA user_version").scalar_one())
    if version > MANAGED_USER_VERSION:
        raise HqIndexError(f"index schema {version} is newer than this software: upgrade bodycam")
    return version in LEGACY_USER_VERSIONS


def upgrade(engine: Engine) -> str:
    """Bring the database to the package's head in one transaction; return the revision."""
    try:
        with engine.execution_options(**{WRITE_OPTION: True}).begin() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATE_LOCK_KEY)))
            current = current_revision(conn)
            if current is not None and not _known(current):
                raise HqIndexError(f"the index at {mask(engine.url)} is at revision {current}, newer than this "
                                   "software knows: upgrade bodycam before opening it")
            cfg = _config(conn)
            if current is None and engine.dialect.name == "sqlite" and _legacy_sqlite(conn):
                command.stamp(cfg, LEGACY_REVISION)
            command.upgrade(cfg, "head")
            if engine.dialect.name == "sqlite":
                conn.exec_driver_sql(f"PRAGMA user_version={MANAGED_USER_VERSION}")
            revision = current_revision(conn)
    except sa.exc.SQLAlchemyError as exc:
        raise HqIndexError(f"Migrating {mask(engine.url)}: {reason(exc)}") from exc
    assert revision is not None
    return revision


def require_current(engine: Engine, url_option: str) -> None:
    """Refuse, in one line saying what to run, a database that is not at this software's head."""
    current, head = status(engine)
    if current == head:
        return
    if current is not None and current != "legacy" and not _known(current):
        raise HqIndexError(f"the index at {mask(engine.url)} is at revision {current}, newer than this "
                           "software knows: upgrade bodycam")
    state = "has no schema yet" if current is None else f"is at revision {current}"
    raise HqIndexError(f"the index at {mask(engine.url)} {state}, this software needs {head}: "
                       f"run `bodycam-hq migrate {url_option}` first")
