"""Integration fixtures: no agent process outlives the test that started it; a real PostgreSQL
for the tests that need one (``postgres``, ``postgres_url``, ``fresh_postgres_url``); ``s3_server``,
a real S3 server with Object Lock (SeaweedFS, tests/s3_util.py) shared by the session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.agent_util import RUNNING
from tests.pg_util import MISSING, PostgresCluster, pg_bin_dir
from tests.s3_util import S3Server, seaweedfs


@pytest.fixture(autouse=True)
def _no_agent_left_behind() -> Iterator[None]:
    """Kill the agents this test started (not those of wider-scoped fixtures, set up before it)."""
    before = len(RUNNING)
    yield
    for proc in RUNNING[before:]:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    del RUNNING[before:]


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """The session's real PostgreSQL cluster (tests/pg_util.py), stopped and removed at the end.
    Skipped, saying what to install, only where PostgreSQL's binaries are absent."""
    if pg_bin_dir() is None:
        pytest.skip(MISSING)
    cluster = PostgresCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres: PostgresCluster) -> str:
    """The URL of one database (``bodycam``) on the session's cluster, shared by the session."""
    return postgres.create_database("bodycam")


@pytest.fixture
def fresh_postgres_url(postgres: PostgresCluster, request: pytest.FixtureRequest) -> str:
    """A new, empty database for this test alone."""
    return postgres.create_database(request.node.name)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each engine the index runs on: a test taking it runs on both."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'index.sqlite'}"
    return str(request.getfixturevalue("fresh_postgres_url"))


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """SeaweedFS with its S3 gateway on 127.0.0.1 (free ports), killed and removed after the session."""
    with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server
