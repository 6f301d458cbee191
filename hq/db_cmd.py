"""Index maintenance commands (``bodycam-hq migrate``, ``audit verify``, ``heartbeats prune``) and
the ``--database-url`` option of every command that opens the index."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from hq.db import HqIndexError
from hq.db import migrate as migrations
from hq.db.engine import DEFAULT_NAME, ENV_URL, default_url, make_engine, mask, parse_url
from hq.index import SqlIndex, SqliteIndex

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


def _open(args: argparse.Namespace) -> SqlIndex | None:
    if args.database_url:
        return SqlIndex.open(str(args.database_url))
    return None if args.data_dir is None else SqliteIndex(args.data_dir / DEFAULT_NAME)


def cmd_audit_verify(args: argparse.Namespace) -> int:
    index = _open(args)
    if index is None:
        return _fail("audit verify", "give --database-url URL, or --data-dir H for H/index.sqlite", 2)
    with index:
        report = index.verify_audit()
    print(report.summary())
    return 0 if report.intact else 1


MAX_PRUNE_PASSES = 10_000


def cmd_heartbeats_prune(args: argparse.Namespace) -> int:
    index = _open(args)
    if index is None:
        return _fail("heartbeats prune", "give --database-url URL, or --data-dir H for H/index.sqlite", 2)
    totals: dict[str, int] = {}
    with index:
        policy = index.heartbeat_policy()
        for _ in range(MAX_PRUNE_PASSES):  # each pass is bounded; stop when one leaves nothing more
            counts = index.prune(time.time_ns())
            for name, value in counts.items():
                totals[name] = value if name == "abandoned_uploads" else totals.get(name, 0) + value
            if all(v < index.limits.batch_rows for k, v in counts.items() if k != "abandoned_uploads"):
                break
    print(f"policy: heartbeats kept {policy.heartbeat_max_age_s // 86400} days and at most "
          f"{policy.heartbeat_max_per_unit} per unit; positions kept {policy.position_max_age_s // 86400} days")
    print(", ".join(f"{name.replace('_', ' ')} {value}" for name, value in totals.items()))
    return 0


def maintenance_parent() -> argparse.ArgumentParser:
    """--data-dir (optional here) and --database-url: one of the two names the database."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--data-dir", type=Path, help="headquarters' data dir: its index.sqlite is the database")
    add_database_url(parent)
    return parent


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> list[argparse.ArgumentParser]:
    """Add the commands; return the nested ones (audit verify), which the caller gives -v too."""
    parent = maintenance_parent()
    p = sub.add_parser("migrate", parents=[parent], help="bring the index's schema to this software's revision",
                       description="Apply the index's schema migrations and print the revision. The embedded "
                       "SQLite index (DATA_DIR/index.sqlite) is also migrated when a command first opens it; a "
                       "--database-url database is migrated only by this command. Exit codes: 0 at the "
                       "newest revision; 1 the database refused; 2 bad usage.")
    p.set_defaults(func=cmd_migrate)
    a = sub.add_parser("audit", help="the audit log")
    asub = a.add_subparsers(dest="audit_command", required=True, metavar="COMMAND")
    v = asub.add_parser("verify", parents=[parent], help="walk the audit log's hash chain",
                        description="Check every audit record's hash and its link to the one before. Prints "
                        "'N records, chain intact, head SHA' (keep the head: a later verify that starts from it "
                        "also shows nothing was cut from the end), or the first broken record. Exit codes: 0 "
                        "intact; 1 broken, or the database refused; 2 bad usage.")
    v.set_defaults(func=cmd_audit_verify)
    h = sub.add_parser("heartbeats", help="heartbeat history")
    hsub = h.add_subparsers(dest="heartbeats_command", required=True, metavar="COMMAND")
    q = hsub.add_parser("prune", parents=[parent], help="apply the heartbeat and nonce retention now",
                        description="Delete heartbeats past the retention policy (age, count per unit), strip "
                        "positions past the position retention, delete expired nonces, and count abandoned "
                        "uploads. The policy is the database's hq_policy row (docs/architecture.md, Database); "
                        "the service runs the same pass periodically. Exit codes: 0 done; 1 the database "
                        "refused; 2 bad usage.")
    q.set_defaults(func=cmd_heartbeats_prune)
    return [v, q]  # nested commands, for -v after them
