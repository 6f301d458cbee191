"""A real, throwaway PostgreSQL cluster for tests, from Debian's packages.

API (reusable by any test that needs PostgreSQL):

- ``PostgresCluster.start()`` -> a running cluster: ``initdb`` and ``pg_ctl`` from the newest
  ``/usr/lib/postgresql/<version>/bin`` (or PATH); run through ``runuser -u postgres --`` when
  the tests run as root (CI does; ``pg_ctl`` refuses root), directly otherwise. It listens on
  127.0.0.1 only, on a free port, with its unix socket in its own temporary folder; its superuser
  ``bodycam`` has a random password (SCRAM), never a default one.
- ``cluster.url(dbname)``: a ``postgresql+psycopg://`` URL for that database, password included
  (tests only: keep such URLs out of logs; ``hq.db.engine.mask`` hides it).
- ``cluster.create_database(prefix)``: a new, empty database; returns its URL.
- ``cluster.stop()``: stops it and removes its folder (data, socket, log).
- ``pg_bin_dir()``: the folder of ``pg_ctl``, or None when PostgreSQL is not installed;
  ``MISSING`` says what to install.

The pytest fixtures over it live in ``tests/integration/conftest.py``: ``postgres`` (the
session's cluster), ``postgres_url`` (session-scoped: the URL of one database, ``bodycam``) and
``fresh_postgres_url`` (a new empty database for each test).
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from tests.prereqs import find_tool, install_command

MISSING = f"PostgreSQL's server binaries are not installed: run `{install_command(['postgresql'])}`"
SUPERUSER = "bodycam"
_ids = itertools.count(1)


def pg_bin_dir() -> Path | None:
    found = find_tool("pg_ctl")
    return None if found is None else Path(found).parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresError(Exception):
    """The test cluster could not be set up or started; the message holds the tool's output."""


class PostgresCluster:
    """One throwaway cluster. Not thread-safe: start and stop it from one thread (a fixture)."""

    def __init__(self) -> None:
        bin_dir = pg_bin_dir()
        if bin_dir is None:
            raise PostgresError(MISSING)
        self.bin_dir = bin_dir
        self.as_postgres = os.geteuid() == 0
        self.root = Path(tempfile.mkdtemp(prefix="bodycam-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.log = self.root / "postgres.log"
        self.password = secrets.token_urlsafe(24)
        self.port = 0

    def _run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin_dir / argv[0]), *argv[1:]]
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=self.root)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise PostgresError(f"{argv[0]} failed ({done.returncode}): {done.stdout}{done.stderr}{log}")
        return done

    def start(self) -> PostgresCluster:
        self.sockets.mkdir()
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        if self.as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
            for path in (self.sockets, pwfile):
                shutil.chown(path, "postgres", "postgres")
        try:
            self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, f"--pwfile={pwfile}",
                      "--auth=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
        finally:
            pwfile.unlink()
        for attempt in range(3):
            self.port = free_port()
            options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.sockets} "
                       "-c unix_socket_permissions=0700 -c fsync=off -c synchronous_commit=off "
                       "-c full_page_writes=off -c max_connections=200")
            try:
                self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o", options,
                          "start")
                return self
            except PostgresError:
                if attempt == 2 or "could not bind" not in self.log.read_text(errors="replace"):
                    raise
        return self

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql+psycopg://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, prefix: str = "test") -> str:
        """A new empty database named ``<prefix>_<n>``; its URL."""
        import psycopg

        name = f"{re.sub(r'[^a-z0-9_]', '_', prefix.lower())[:40]}_{next(_ids)}"
        with psycopg.connect(host="127.0.0.1", port=self.port, user=SUPERUSER, password=self.password,
                             dbname="postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
