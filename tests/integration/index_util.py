"""Helpers for the index's tests on both engines: raw connections that bypass the index (as an
attacker holding the database would), and the command line with the password kept off it."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable

from hq.db.engine import parse_url


def raw_execute(url: str, sql: str) -> None:
    """Run ``sql`` on a connection of the engine's own driver, bypassing the index entirely."""
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        conn = sqlite3.connect(str(parsed.database), isolation_level=None)
        try:
            conn.execute(sql)
        finally:
            conn.close()
        return
    import psycopg

    with psycopg.connect(parsed.set(drivername="postgresql").render_as_string(hide_password=False),
                         autocommit=True) as pg:
        pg.execute(sql.encode())


def raw_error(url: str) -> type[Exception]:
    if url.startswith("sqlite"):
        return sqlite3.DatabaseError
    import psycopg

    return psycopg.Error


def run_hq(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hq.cli", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def cli_url(db_url: str) -> tuple[str, dict[str, str]]:
    """The URL to give on a command line, and the environment: a password travels in PGPASSWORD,
    as libpq reads it, never on the command line."""
    if db_url.startswith("sqlite"):
        return db_url, {}
    parsed = parse_url(db_url)
    return parsed.set(password=None).render_as_string(hide_password=False), {"PGPASSWORD": str(parsed.password)}


def run_together(work: Callable[[int], None], count: int) -> None:
    """``work(0)`` .. ``work(count - 1)`` on as many threads, released at once (as nodes racing)."""
    start = threading.Barrier(count)

    def run(n: int) -> None:
        start.wait(30)
        work(n)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
