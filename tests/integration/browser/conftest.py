"""Fixtures of the operations room's browser tests (tests/browser_util.py is the API).

- ``ops_server``: one headquarters per test module on the embedded index, with one user per role
  (``olivia`` operator, ``sam`` supervisor, ``ada`` auditor, ``root`` admin).
- ``ops_server_pg``: the same over a fresh PostgreSQL database.
- ``browser`` (per module) and ``page`` (per test, cookies cleared after it; a screenshot named
  after the test is saved whatever the outcome).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser_util import Browser, OpsServer, screenshot


@pytest.fixture(scope="module")
def ops_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpsServer]:
    server = OpsServer.start(tmp_path_factory.mktemp("ops"))
    yield server
    server.stop()


@pytest.fixture
def ops_server_pg(tmp_path: Path, fresh_postgres_url: str) -> Iterator[OpsServer]:
    server = OpsServer.start(tmp_path / "hq", database_url=fresh_postgres_url)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    b = Browser()
    yield b
    b.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Any]:
    p = browser.new_page()
    yield p
    try:
        screenshot(p, request.node.name + "-end")
    finally:
        p.close()
        browser.clear_cookies()
