"""The operations room's lifecycle pages over real HTTPS (a real `serve`, users made with the real
CLI): a supervisor opens a case, holds a recording, cannot delete it while held, closes the case,
queues and restores it, and exports the case through the export queue (downloadable by the
requester only); an operator is refused; every step is audited."""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from agent.cli import main as bodycam
from agent.evidence.keys import load_hq_private
from hq.index import SqliteIndex
from hq.records import Evidence
from hq.storage import FileEvidenceStore
from tests.browser_util import OpsServer
from tests.evidence_util import ChainBuilder
from tests.playback_daemon import DecryptDaemon
from tests.playback_util import ingest, record

REC = "7c9e6679-7425-40de-944b-e07fc1f90ae7"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpsServer]:
    s = OpsServer.start(tmp_path_factory.mktemp("ops-life"), users={"sam": ("supervisor",), "olivia": ("operator",),
                                                                           "sue": ("supervisor",)})
    unit = ChainBuilder(tmp_path_factory.mktemp("unit"), device_id="unit-3")
    segment = unit.segment()
    digest = hashlib.sha256(segment.read_bytes()).hexdigest()
    location = FileEvidenceStore(s.data).put("unit-3", 0, segment)
    now = time.time_ns()
    with SqliteIndex(s.data / "index.sqlite") as index:
        index.enroll("unit-3", unit.write_device_pub(s.data / "u3.pub").read_text(), "ef" * 32, now)
        index.add_evidence(Evidence("unit-3", 0, "segment", "11" * 32, "00" * 32, digest, 10, now, now + 1, now,
                                    "verified", location, "c" * 32, recording_id=REC))
    yield s
    s.stop()


def _session(server: OpsServer, name: str) -> requests.Session:
    http = requests.Session()
    http.trust_env = False
    http.verify = str(server.data / "keys" / "ca.pem")
    page = http.get(server.url + "/ops/signin")
    user = server.users[name]
    done = http.post(server.url + "/ops/signin", data={
        "csrf_token": _token(page.text), "name": name, "password": user.password, "code": user.next_code(),
        "next": "/ops/"}, headers={"Origin": server.url}, allow_redirects=False)
    assert done.status_code == 303
    return http


def _token(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, html
    return m.group(1)


def _post(server: OpsServer, http: requests.Session, path: str, **form: str) -> requests.Response:
    token = _token(http.get(server.url + "/ops/cases").text)
    return http.post(server.url + "/ops" + path, data={"csrf_token": token, **form},
                     headers={"Origin": server.url}, allow_redirects=False)


def test_a_supervisor_holds_queues_restores_and_exports(server: OpsServer) -> None:
    olivia = _session(server, "olivia")
    assert olivia.get(server.url + "/ops/cases").status_code == 403
    assert olivia.get(server.url + "/ops/deletion-queue").status_code == 403
    sam = _session(server, "sam")
    rec_path = f"/recordings/unit-3/{REC}/lifecycle"
    assert _post(server, sam, "/cases", case_id="2026-0077", title="robbery").status_code == 303
    assert "robbery" in sam.get(server.url + "/ops/cases").text
    assert _post(server, sam, "/cases/2026-0077/add", device_id="unit-3", recording_id=REC).status_code == 303
    page = sam.get(server.url + "/ops/cases/2026-0077").text
    assert REC in page and "<td>yes</td>" in page
    assert (server.data / "evidence" / "unit-3" / "0000000000.bcs.hold").exists()  # the store's hold
    refused = _post(server, sam, rec_path + "/delete", reason="duplicate")
    assert refused.status_code == 409 and "legal hold" in refused.text
    assert _post(server, sam, rec_path + "/assign", category="arrest").status_code == 303
    assert "arrest" in sam.get(server.url + "/ops" + rec_path).text
    exported = _post(server, sam, "/cases/2026-0077/export")
    assert exported.status_code == 303, exported.text.split("<main")[1][:800]
    job = exported.headers["Location"].split("#job-")[1]
    link = f"/ops/exports/{job}/download"
    with zipfile.ZipFile(io.BytesIO(_download(server, sam, job))) as z:
        assert any(n.endswith("/case.json") for n in z.namelist())
        assert any(n.endswith("/receipts/hq.pub") for n in z.namelist())  # receipts checkable offline
    sue = _session(server, "sue")  # another supervisor sees the case but not the export's download
    assert link not in sue.get(server.url + "/ops/exports").text
    assert sue.get(server.url + link).status_code == 403
    assert _post(server, sam, "/cases/2026-0077/close").status_code == 303
    assert _post(server, sam, rec_path + "/delete", reason="no further use").status_code == 303
    assert REC in sam.get(server.url + "/ops/deletion-queue").text
    assert _post(server, sam, "/deletion-queue/restore", device_id="unit-3", recording_id=REC).status_code == 303
    assert REC not in sam.get(server.url + "/ops/deletion-queue").text
    events = [(r["event"], r["actor"], r["outcome"]) for r in server.audit()]
    for expected in (("access-denied", "olivia", "refused"), ("case-open", "sam", "ok"), ("hold", "sam", "ok"),
                     ("deletion-request", "sam", "refused"), ("category-assign", "sam", "ok"), ("export", "sam", "ok"),
                     ("release", "sam", "ok"), ("restore", "sam", "ok"), ("view-deletion-queue", "sam", "ok"),
                     ("view-case", "sam", "ok"), ("export-queued", "sam", "ok"),
                     ("view-export-download", "sam", "ok"), ("download-export", "sue", "refused")):
        assert expected in events, expected


def test_the_pages_refuse_bad_input_in_one_line(server: OpsServer) -> None:
    sam = _session(server, "sam")
    answer = _post(server, sam, "/cases", case_id="../etc", title="x")
    assert answer.status_code == 409 and "case id" in answer.text
    assert sam.get(server.url + "/ops/cases/nope").status_code == 404


def test_an_export_from_the_room_has_viewing_copies_that_verify(tmp_path: Path) -> None:
    """With the decrypt component, the queued export holds each recording's viewing copies with
    their C2PA credentials, and the downloaded zip verifies offline."""
    run = tmp_path / "run"
    run.mkdir(mode=0o750)
    sock = run / "decryptd.sock"
    server = OpsServer.start(tmp_path / "hq", users={"sam": ("supervisor",)},
                             extra_args=["--decryptd-socket", str(sock)])
    daemon = DecryptDaemon(server.data / "keys" / "hq.key", sock)
    try:
        rec = record(tmp_path / "unit", seconds=2.0, hq_key=load_hq_private(server.data / "keys" / "hq.key"))  # type: ignore[arg-type]
        with SqliteIndex(server.data / "index.sqlite") as index:
            ingest(index, FileEvidenceStore(server.data), server.data, rec, time.time_ns())
        sam = _session(server, "sam")
        assert _post(server, sam, "/cases", case_id="2026-0078", title="assault").status_code == 303
        assert _post(server, sam, "/cases/2026-0078/add", device_id=rec.device_id,
                     recording_id=rec.recording_id).status_code == 303
        job = _post(server, sam, "/cases/2026-0078/export").headers["Location"].split("#job-")[1]
        archive = _download(server, sam, job)
    finally:
        assert daemon.stop() == 0
        server.stop()
    with zipfile.ZipFile(io.BytesIO(archive)) as z:
        z.extractall(tmp_path / "court")
    (folder,) = (tmp_path / "court").iterdir()
    said = io.StringIO()
    with contextlib.redirect_stdout(said):
        assert bodycam(["verify", str(folder)]) == 0
    text = said.getvalue()
    assert "its 20 H.264 packets are the unit's" in text and "2 MP4(s) validated by the C2PA reader" in text, text


def _download(server: OpsServer, http: requests.Session, job: str) -> bytes:
    link = f"/ops/exports/{job}/download"
    deadline = time.monotonic() + 120
    while link not in (status := http.get(server.url + "/ops/exports").text):  # the export runs off the request
        assert time.monotonic() < deadline and "failed" not in status, status.split("<main")[1][:800]
        time.sleep(0.2)
    archive = http.get(server.url + link)
    assert archive.status_code == 200 and archive.headers["content-type"] == "application/zip"
    return archive.content
