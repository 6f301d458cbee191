"""``bodycam-hq migrate``: the index's schema brought to this software's revision; and the
``--database-url`` option of every command that opens the index."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from hq.db import HqIndexError
from hq.db import migrate as migrations
from hq.db.engine import ENV_URL, default_url, make_engine, mask, parse_url

DATABASE_URL_HELP = (
    "the index's database (default: DATA_DIR/index.sqlite; or $" + ENV_URL + "), e.g. "
    "postgresql+psycopg://hq@db.example:5432/bodycam; give no password here: libpq reads "
    "PGPASSFILE or ~/.pgpass (or PGPASSWORD)"
)


def add_database_url(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database-url", default=os.environ.get(ENV_URL) or None, help=DATABASE_URL_HELP)


def _fail(command: str, message: str, code: int = 1) -> int:
    print(f"bodycam-hq {command}: {message}", file=sys.stderr)
    return code


def target_url(args: argparse.Namespace) -> str | None:
    """The database a maintenance command works on: --database-url, else DATA_DIR's SQLite file."""
    if args.database_url:
        return str(args.database_url)
    data_dir: Path | None = args.data_dir
    return None if data_dir is None else default_url(data_dir)


def cmd_migrate(args: argparse.Namespace) -> int:
    url = target_url(args)
    if url is None:
        return _fail("migrate", "give --database-url URL, or --data-dir H for H/index.sqlite", 2)
    try:
        engine = make_engine(parse_url(url))
    except HqIndexError as exc:
        return _fail("migrate", str(exc), 2)
    try:
        before, head = migrations.status(engine)
        after = before if before == head else migrations.upgrade(engine)
    except HqIndexError as exc:
        return _fail("migrate", str(exc))
    finally:
        engine.dispose()
    if before == after:
        print(f"{mask(url)}: already at revision {after}")
    else:
        print(f"{mask(url)}: migrated from {before or 'an empty database'} to revision {after}")
    return 0


def maintenance_parent() -> argparse.ArgumentParser:
    """--data-dir (optional here) and --database-url: one of the two names the database."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--data-dir", type=Path, help="headquarters' data dir: its index.sqlite is the database")
    add_database_url(parent)
    return parent


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> list[argparse.ArgumentParser]:
    parent = maintenance_parent()
    p = sub.add_parser("migrate", parents=[parent], help="bring the index's schema to this software's revision",
                       description="Apply the index's schema migrations and print the revision. The embedded "
                       "SQLite index (DATA_DIR/index.sqlite) is also migrated when a command first opens it; a "
                       "--database-url database is migrated only by this command. Exit codes: 0 at the "
                       "newest revision; 1 the database refused; 2 bad usage.")
    p.set_defaults(func=cmd_migrate)
    return [p]
