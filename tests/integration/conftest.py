"""Integration fixtures: no agent process outlives the test that started it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.agent_util import RUNNING


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
