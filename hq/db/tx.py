"""Transactions over an engine, with SQLAlchemy's errors turned into one line of the store's own
exception type: ``doing: the driver's message`` (no statement dump, no link).

Every SQL store (the index, accounts, alerts, the transparency log, the lifecycle) opens its
connections through these, so a failure reads the same wherever it happens.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, RowMapping

from hq.db import HqIndexError
from hq.db.engine import WRITE_OPTION


def reason(exc: sa.exc.SQLAlchemyError) -> str:
    """The driver's own message, on one line."""
    orig = getattr(exc, "orig", None)
    return " ".join(str(orig if orig is not None else exc).split())


def writer(engine: Engine) -> Engine:
    """``engine`` marked for writing (SQLite: BEGIN IMMEDIATE; hq.db.engine)."""
    return engine.execution_options(**{WRITE_OPTION: True})


@contextlib.contextmanager
def transaction(engine: Engine, doing: str, write: bool = False,
                error: type[Exception] = HqIndexError) -> Iterator[Connection]:
    """One transaction: all of the block or none of it (``write``: a write transaction on
    ``engine``, which should come from ``writer``); a database error raises ``error``."""
    try:
        if write:
            with engine.begin() as conn:
                yield conn
        else:
            with engine.connect() as conn:
                yield conn
    except sa.exc.SQLAlchemyError as exc:
        raise error(f"{doing}: {reason(exc)}") from exc


def rows(engine: Engine, doing: str, query: sa.Executable) -> list[RowMapping]:
    """Every row of ``query``, as mappings."""
    with transaction(engine, doing) as conn:
        return list(conn.execute(query).mappings())


def one(engine: Engine, doing: str, query: sa.Executable) -> tuple[Any, ...]:
    """The single row of an aggregate query, as a tuple."""
    with transaction(engine, doing) as conn:
        return tuple(conn.execute(query).one())
