"""Fixtures of the hardware-in-the-loop suite, and its human summary (beside the JUnit XML)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gpsd_util import Gpsd
from tests.hil.rig import STARTED, Headquarters, NmeaFeeder
from tests.prereqs import require_tool

SUMMARY = Path(os.environ.get("BODYCAM_HIL_SUMMARY", "hil-summary.txt"))
_blocks: dict[str, list[str]] = {}
_outcomes: dict[str, str] = {}


@pytest.fixture
def gpsd(tmp_path: Path) -> Iterator[Gpsd]:
    require_tool("gpsd")
    server = Gpsd(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def feeder(gpsd: Gpsd) -> Iterator[NmeaFeeder]:
    f = NmeaFeeder(gpsd)
    try:
        yield f
    finally:
        f.stop()


@pytest.fixture(autouse=True)
def _no_agent_left_behind() -> Iterator[None]:
    """A scenario that fails half-way must not leave its agent running."""
    before = len(STARTED)
    yield
    for proc in STARTED[before:]:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    del STARTED[before:]


@pytest.fixture
def hq(tmp_path: Path) -> Iterator[Headquarters]:
    h = Headquarters(tmp_path / "hq")
    try:
        yield h
    finally:
        h.down()


@pytest.fixture
def step(request: pytest.FixtureRequest, record_property: object) -> Iterator[object]:
    """``step("what happened", figure=value)``: a line of the scenario's human summary and a JUnit property."""
    start = time.monotonic()
    lines: list[str] = []

    def note(text: str, **figures: object) -> None:
        extra = ", ".join(f"{k}={v}" for k, v in figures.items())
        lines.append(f"  [{time.monotonic() - start:6.1f} s] {text}{' (' + extra + ')' if extra else ''}")
        for k, v in figures.items():
            record_property(k, v)  # type: ignore[operator]

    doc = (request.node.function.__doc__ or "").strip().splitlines()[0]
    _blocks[request.node.nodeid] = [f"{request.node.name}: {doc}"]
    yield note
    _blocks[request.node.nodeid].extend(lines)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" or report.outcome == "failed":
        _outcomes[report.nodeid] = f"  => {report.outcome.upper()} ({report.when}, {report.duration:.1f} s)"


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not _blocks:
        return
    out = ["bodycam hardware-in-the-loop summary", ""]
    for nodeid, lines in _blocks.items():
        out.extend(lines)
        out.append(_outcomes.get(nodeid, "  => not run"))
        out.append("")
    SUMMARY.write_text("\n".join(out))
