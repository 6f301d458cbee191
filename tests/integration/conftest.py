"""Integration fixtures: no agent process outlives the test that started it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.agent_util import RUNNING


@pytest.fixture(autouse=True)
def _no_agent_left_behind() -> Iterator[None]:
    yield
    for proc in RUNNING:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    RUNNING.clear()
