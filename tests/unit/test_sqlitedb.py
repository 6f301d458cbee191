"""The one SQLite file wrapper of the unit's store and headquarters' index."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from agent.sqlitedb import SqliteFile


class FileError(Exception):
    pass


def test_a_transaction_is_all_or_nothing_and_errors_say_what_was_done(tmp_path: Path) -> None:
    f = SqliteFile(tmp_path / "x.db", "index", FileError, busy_timeout_s=0)
    assert stat.S_IMODE((tmp_path / "x.db").stat().st_mode) == 0o600
    with f.transaction("creating") as db:
        db.conn.execute("CREATE TABLE t (v INTEGER UNIQUE)")
    with pytest.raises(RuntimeError), f.transaction("inserting two") as db:
        db.conn.execute("INSERT INTO t VALUES (1)")
        raise RuntimeError("half way")
    with pytest.raises(FileError, match="^inserting twice: UNIQUE"), f.transaction("inserting twice") as db:
        db.conn.execute("INSERT INTO t VALUES (2)")
        db.conn.execute("INSERT INTO t VALUES (2)")
    assert f.rows("reading", "SELECT v FROM t") == []
    assert f.rows("pragma", "PRAGMA journal_mode") == [{"journal_mode": "wal"}]
    f.close()
    f.close()
    with pytest.raises(FileError, match=r"^reading: index .*x\.db is closed$"):
        f.rows("reading", "SELECT 1")


def test_an_unopenable_file_is_the_owners_error(tmp_path: Path) -> None:
    with pytest.raises(FileError, match="^Creating store"):
        SqliteFile(tmp_path / "missing" / "x.db", "store", FileError, busy_timeout_s=0)
