"""A court export from the operations room in a real browser: the case page's button queues it,
the exports page shows it running then done with its download (accessible, axe-core clean), an
admin sees it without a download link, and the audit log holds each step."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

from hq.index import SqliteIndex
from hq.records import Evidence
from hq.storage import FileEvidenceStore
from tests.browser_util import OpsServer, assert_accessible, cli, screenshot, sign_in
from tests.evidence_util import ChainBuilder

REC = "5b0c5c2e-2f8e-4d6e-9a51-0c8a2f3e7d11"


def _held_recording(server: OpsServer, tmp: Path) -> None:
    unit = ChainBuilder(tmp / "unit", device_id="unit-9")
    segment = unit.segment()
    digest = hashlib.sha256(segment.read_bytes()).hexdigest()
    location = FileEvidenceStore(server.data).put("unit-9", 0, segment)  # moves the file in
    now = time.time_ns()
    with SqliteIndex(server.data / "index.sqlite") as index:
        index.enroll("unit-9", unit.write_device_pub(server.data / "u9.pub").read_text(), "ef" * 32, now)
        index.add_evidence(Evidence("unit-9", 0, "segment", "11" * 32, "00" * 32,
                                    digest, 10, now, now + 1, now,
                                    "verified", location, "d" * 32, recording_id=REC))
    cli("case", "open", "2026-0101", "--title", "burglary", "--data-dir", str(server.data))
    cli("case", "add", "2026-0101", "--device-id", "unit-9", "--recording", REC, "--data-dir", str(server.data))


def test_a_supervisor_exports_from_the_case_page_and_downloads_it(ops_server: OpsServer, page: Any,
                                                                  tmp_path: Path) -> None:
    _held_recording(ops_server, tmp_path)
    sign_in(page, ops_server, "sam", "/ops/cases/2026-0101")
    page.get_by_role("button", name="Export for court").click()
    page.get_by_role("heading", name="Court exports").wait_for()
    row = page.locator("tbody tr").first
    deadline = time.monotonic() + 60
    while "done" not in row.inner_text():
        assert time.monotonic() < deadline and "failed" not in row.inner_text(), row.inner_text()
        time.sleep(0.3)
        page.reload()
        row = page.locator("tbody tr").first
    link = page.get_by_role("link", name="Download")
    assert link.count() == 1 and "/download" in (link.get_attribute("href") or "")
    screenshot(page, "ops-exports-done")
    assert_accessible(page)
    with page.expect_download() as got:
        link.click()
    assert got.value.suggested_filename.endswith(".zip")

    page.get_by_role("button", name="Sign out").click()
    page.get_by_role("heading", name="Sign in").wait_for()
    sign_in(page, ops_server, "root", "/ops/exports")
    assert "sam" in page.locator("tbody tr").first.inner_text()  # an admin oversees every export
    assert page.get_by_role("link", name="Download").count() == 0  # but downloads only their own
    events = {(r["event"], r["actor"], r["outcome"]) for r in ops_server.audit()}
    for expected in (("export-queued", "sam", "ok"), ("export", "sam", "ok"), ("view-export-download", "sam", "ok"),
                     ("view-exports", "root", "ok")):
        assert expected in events, expected
