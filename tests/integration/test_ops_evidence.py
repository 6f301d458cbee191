"""The evidence pages over real HTTPS without a decrypt daemon (a real ``serve`` without
``--decryptd-socket``, a real recording ingested): search and the recording's page work, playback
and the GNSS trail answer 503 saying what to start; bad input gets one line; a user who is an
auditor and a supervisor may search, as the supervisor role allows."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from agent.evidence.keys import load_hq_private
from hq.evidence_service import NO_DECRYPTD
from hq.index import SqliteIndex
from hq.storage import FileEvidenceStore
from tests.browser_util import OpsServer
from tests.integration.test_ops_lifecycle import _session
from tests.playback_util import Recording, ingest, record


@dataclass
class Held:
    server: OpsServer
    rec: Recording


@pytest.fixture(scope="module")
def held(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Held]:
    server = OpsServer.start(tmp_path_factory.mktemp("ops-evidence"),
                             users={"sam": ("supervisor",), "ava": ("auditor", "supervisor")})
    try:
        rec = record(tmp_path_factory.mktemp("unit"), seconds=3.0, marks_at_s=(1.0,),
                     hq_key=load_hq_private(server.data / "keys" / "hq.key"))
        with SqliteIndex(server.data / "index.sqlite") as index:
            ingest(index, FileEvidenceStore(server.data), server.data, rec, time.time_ns())
        yield Held(server, rec)
    finally:
        server.stop()


def test_search_and_pages_work_without_decryptd_and_playback_says_what_to_start(held: Held) -> None:
    http = _session(held.server, "sam")
    base = f"{held.server.url}/ops/evidence"
    found = http.get(base, params={"unit": held.rec.device_id, "marks": "yes", "status": "verified"})
    assert found.status_code == 200 and held.rec.recording_id in found.text
    unit = http.get(f"{held.server.url}/ops/units/{held.rec.device_id}")
    assert unit.status_code == 200 and f'/ops/evidence?unit={held.rec.device_id}" id="unit-recordings"' in unit.text
    none = http.get(base, params={"unit": held.rec.device_id, "marks": "no"})
    assert none.status_code == 200 and 'id="no-results"' in none.text
    page = http.get(f"{base}/{held.rec.device_id}/{held.rec.recording_id}")
    assert page.status_code == 200
    assert 'id="recording-audit"' not in page.text  # the audit trail is the auditor's
    assert 'id="no-decryptd"' in page.text and page.text.count('<tr><th scope="row">') >= len(held.rec.segments())
    for path in ("play.mp4", "play.mp4?rendition=thermal", "trail.json"):
        answer = http.get(f"{base}/{held.rec.device_id}/{held.rec.recording_id}/{path}")
        assert answer.status_code == 503, path
        assert answer.json()["error"]["message"] == NO_DECRYPTD
    # the searches and the view are audited; no playback started
    audit = held.server.audit()
    assert [r for r in audit if r["event"] == "evidence-search" and r["actor"] == "sam"]
    assert [r for r in audit if r["event"] == "view-evidence" and r["actor"] == "sam"
            and r["target"] == f"recording:{held.rec.device_id}/{held.rec.recording_id}"]
    assert not [r for r in audit if r["event"] == "view-playback"]


def test_bad_input_gets_one_line_and_an_unknown_recording_404(held: Held) -> None:
    http = _session(held.server, "sam")
    base = f"{held.server.url}/ops/evidence"
    when = http.get(base, params={"from": "yesterday"})
    assert when.status_code == 400 and "is not a date and time such as 2026-12-03T10:00 (UTC)" in when.text
    status = http.get(base, params={"status": "approved"})
    assert status.status_code == 400 and "status: one of verified, warnings, incomplete" in status.text
    rec = f"{base}/{held.rec.device_id}/{held.rec.recording_id}"
    assert http.get(rec + "/play.mp4", params={"rendition": "infrared"}).json()["error"]["message"] == \
        "rendition: video or thermal"
    assert http.get(rec + "/play.mp4", params={"from_seq": "first"}).status_code == 400
    missing = http.get(f"{base}/{held.rec.device_id}/0000dead-0000-0000-0000-000000000000")
    assert missing.status_code == 404 and "no recording 0000dead" in missing.text


def test_an_auditor_who_is_also_a_supervisor_may_search_and_read_who_played_it(held: Held) -> None:
    http = _session(held.server, "ava")
    answer = http.get(f"{held.server.url}/ops/evidence", params={"unit": held.rec.device_id})
    assert answer.status_code == 200 and held.rec.recording_id in answer.text
    page = http.get(f"{held.server.url}/ops/evidence/{held.rec.device_id}/{held.rec.recording_id}")
    link = re.search(r'id="recording-audit" href="([^"]+)"', page.text)
    assert link, page.text
    trail = http.get(held.server.url + html.unescape(link.group(1)))
    assert trail.status_code == 200 and "view-evidence" in trail.text and ">ava<" in trail.text
