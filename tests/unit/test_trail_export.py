"""Audit trails exported as CSV and PDF, from a real SQLite index."""

from __future__ import annotations

import csv
import io
import subprocess
from pathlib import Path

import pytest

from hq.audit import Auditor
from hq.index import SqliteIndex
from hq.records import AuditQuery
from hq.trail_export import TrailError, collect, to_csv, to_pdf
from tests.prereqs import require_tool

T0 = 1_800_000_000 * 1_000_000_000


@pytest.fixture
def index(tmp_path: Path) -> SqliteIndex:
    with SqliteIndex(tmp_path / "index.sqlite") as idx:
        clock = iter(range(T0, T0 + 10_000 * 1_000_000, 1_000_000))
        audit = Auditor(idx, "hq-web", lambda: next(clock))
        for i in range(25):
            audit.record("view-evidence", "sam" if i % 2 else "ada", f"recording:U1/r{i % 3}", "ok", n=i)
        audit.record("signin", "=HYPERLINK(\"x\")", "ops-room", "failed", reason="unknown-user")
        yield idx  # type: ignore[misc]


def test_collect_pages_through_every_match_oldest_first(index: SqliteIndex, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("hq.trail_export.PAGE", 4)  # several pages for few records
    records = collect(index, AuditQuery(actor="sam"))
    assert [r.detail["n"] for r in records] == list(range(1, 25, 2))
    by_object = collect(index, AuditQuery(target="recording:U1/r1"))
    assert {r.target for r in by_object} == {"recording:U1/r1"} and len(by_object) == 8
    with pytest.raises(TrailError, match="narrow the search"):
        collect(index, AuditQuery(), max_rows=10)


def test_csv_has_every_field_and_never_a_formula(index: SqliteIndex) -> None:
    records = collect(index, AuditQuery())
    rows = list(csv.reader(io.StringIO(to_csv(records).decode())))
    assert rows[0][:7] == ["id", "time_utc", "component", "event_type", "user", "object", "outcome"]
    assert len(rows) == 1 + 26
    assert rows[1][1] == "2027-01-15T08:00:00.000Z" and rows[1][3] == "view-evidence"
    assert rows[-1][4] == "'=HYPERLINK(\"x\")"  # defused for spreadsheets
    assert rows[2][8] == rows[1][9]  # each record's prev is the one before's hash


def test_pdf_names_the_search_and_every_record(index: SqliteIndex, tmp_path: Path) -> None:
    pdftotext = require_tool("pdftotext")
    records = collect(index, AuditQuery(actor="ada"))
    pdf = to_pdf(records, "Audit trail of user ada", {"user": "ada"}, "auditor1", T0)
    assert pdf.startswith(b"%PDF-")
    path = tmp_path / "trail.pdf"
    path.write_bytes(pdf)
    text = subprocess.run([pdftotext, "-layout", str(path), "-"], capture_output=True, text=True, check=True).stdout
    assert "Audit trail of user ada" in text and "13 record(s)" in text and "by auditor1" in text
    assert text.count("view-evidence") == 13
