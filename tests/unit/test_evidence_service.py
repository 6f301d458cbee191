"""Evidence search, a recording's view and playback over a real index, store and decrypt daemon."""

from __future__ import annotations

import io
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest

from agent.evidence.decrypt import open_segment
from hq.app import lifecycle_service
from hq.audit import Auditor
from hq.decrypt_client import DecryptClient
from hq.decryptd import Decryptor, DecryptServer, Limits
from hq.evidence_service import EvidenceError, EvidenceService, parse_filter
from hq.index import SqliteIndex
from hq.lifecycle_index import SqlLifecycle
from hq.records import RecordingFilter
from hq.storage import FileEvidenceStore
from tests.playback_util import FPS, Recording, ingest, luma, plaintext_on_disk, record

T0_NS = 1_790_000_000_000_000_000


@dataclass
class Hq:
    root: Path
    index: SqliteIndex
    service: EvidenceService
    rec: Recording
    socket: Path


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Recording:
    return record(tmp_path_factory.mktemp("unit"), seconds=5.0, segment_s=2.0, marks_at_s=(1.5,))


@pytest.fixture
def hq(tmp_path: Path, recorded: Recording) -> Iterator[Hq]:
    root = tmp_path / "H"
    root.mkdir()
    index = SqliteIndex(root / "index.sqlite")
    store = FileEvidenceStore(root)
    ingest(index, store, root, recorded, T0_NS)
    sock = root / "run" / "decryptd.sock"
    sock.parent.mkdir(mode=0o750)
    server = DecryptServer(sock, Decryptor(recorded.hq_key, Limits()))
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    service = EvidenceService(index, store, DecryptClient(sock), Auditor(index, "hq-web", lambda: T0_NS),
                              lambda: T0_NS, custody=lifecycle_service(index, store, lambda: T0_NS).custody)
    try:
        yield Hq(root, index, service, recorded, sock)
    finally:
        server.shutdown()
        server.server_close()
        index.close()


def _audit(hq: Hq, event: str) -> list[tuple[str, str, str, dict[str, object]]]:
    return [(a.actor, a.target, a.outcome, a.detail) for a in hq.index.audit_log(event)]


def test_search_by_unit_time_recording_marks_and_status(hq: Hq) -> None:
    rec = hq.rec
    start = min(m["time"]["utc_start_ns"] for m in rec.segments())
    page = hq.service.search("sup1", parse_filter({"unit": rec.device_id}))
    assert page.total == 1
    found = page.recordings[0]
    assert (found.recording_id, found.segments, found.marks, found.status) == (rec.recording_id, 3, 1, "verified")
    assert found.first_seq == rec.segments()[0]["seq"] and found.utc_start_ns == start
    assert hq.service.search("sup1", RecordingFilter(recording_id=rec.recording_id[:8])).total == 1
    assert hq.service.search("sup1", RecordingFilter(marked=False)).total == 0
    assert hq.service.search("sup1", RecordingFilter(status="warnings")).total == 0
    assert hq.service.search("sup1", RecordingFilter(from_ns=start + 60 * 10**9)).total == 0
    assert hq.service.search("sup1", RecordingFilter(to_ns=start + 10**9)).total == 1
    assert hq.service.search("sup1", RecordingFilter(device_id="unit-other")).total == 0
    assert hq.service.search("sup1", parse_filter({"source": "recorded"})).total == 1
    assert hq.service.search("sup1", parse_filter({"source": "background"})).total == 0
    searches = _audit(hq, "evidence-search")
    assert len(searches) == 9 and searches[0][:3] == ("sup1", f"device:{rec.device_id}", "ok")
    assert searches[0][3]["results"] == 1


def test_a_gap_in_the_chain_makes_a_recording_incomplete(tmp_path: Path, recorded: Recording) -> None:
    index = SqliteIndex(tmp_path / "index.sqlite")
    try:
        store = FileEvidenceStore(tmp_path)
        cut = Recording(recorded.device_id, recorded.signer, recorded.hq_key, recorded.files[1:],
                        recorded.manifests[1:], recorded.recording_id)  # seq 0 (boot) never arrived
        ingest(index, store, tmp_path, cut, T0_NS)
        assert [r.status for r in index.search_recordings(RecordingFilter())[0]] == ["incomplete"]
        assert index.search_recordings(RecordingFilter(status="incomplete"))[1] == 1
        assert index.search_recordings(RecordingFilter(status="verified"))[1] == 0
    finally:
        index.close()


def test_the_filter_of_a_form_says_what_is_wrong_in_one_line() -> None:
    assert parse_filter({"unit": "", "from": "2026-12-03T10:00", "marks": "yes", "page": "2"}) == RecordingFilter(
        from_ns=1_796_292_000 * 10**9, marked=True, offset=25)
    assert parse_filter({"source": "background"}) == RecordingFilter(background=True)
    assert parse_filter({"source": "recorded"}) == RecordingFilter(background=False)
    for params, says in (({"unit": "a/b"}, "unit:"), ({"from": "yesterday"}, "not a date"),
                         ({"source": "x"}, "source:"), ({"status": "fine"}, "status:"),
                         ({"per_page": "1000"}, "per_page"),
                         ({"from": "2026-12-03", "to": "2026-12-01"}, "before"), ({"recording": "x;"}, "recording")):
        with pytest.raises(EvidenceError) as err:
            parse_filter(params)
        assert err.value.kind == "bad-request" and says in str(err.value) and "\n" not in str(err.value)


def test_a_recording_shows_segments_receipts_chain_and_marks(hq: Hq) -> None:
    view = hq.service.recording("sup1", hq.rec.device_id, hq.rec.recording_id)
    assert [s.seq for s in view.segments] == [m["seq"] for m in hq.rec.segments()]
    assert [s.offset_ms for s in view.segments] == [0, 2000, 4000]
    assert [e.manifest_sha256 for e, _ in view.events] and {m["event"] for _, m in view.events} >= {"record-start"}
    assert len(view.marks) == 1 and abs(view.marks[0].at_ms - 1500) <= 1000 // FPS
    assert all(view.receipts[s.seq] is not None for s in view.segments)
    assert view.contiguous_through == len(hq.rec.files) - 1 and view.has_thermal
    assert _audit(hq, "view-evidence") == [("sup1", f"recording:{hq.rec.device_id}/{hq.rec.recording_id}", "ok",
                                            {"segments": [s.seq for s in view.segments]})]
    with pytest.raises(EvidenceError) as err:
        hq.service.recording("sup1", hq.rec.device_id, "0000")
    assert err.value.kind == "not-found"


def test_the_trail_and_notes_are_opened_by_the_daemon_and_audited(hq: Hq) -> None:
    view = hq.service.recording("sup1", hq.rec.device_id, hq.rec.recording_id)
    fixes, notes = hq.service.trail("sup1", view)
    assert [(round(f.lat_deg, 5), round(f.lon_deg, 5)) for f in fixes] == [
        (round(a, 5), round(b, 5)) for a, b in hq.rec.fixes]
    assert [f.at_ms for f in fixes] == [0, 1000, 2000, 3000, 4000]
    assert list(notes.values()) == ["mark at frame 15"]
    assert _audit(hq, "view-position-trail")[-1][2:] == ("ok", {"fixes": 5})


def _frames(mp4: bytes) -> tuple[list[int], list[float], set[str]]:
    with av.open(io.BytesIO(mp4)) as c:
        kinds = {s.codec_context.name for s in c.streams}
        levels, times = [], []
        for frame in c.decode(video=0):
            levels.append(int(np.median(frame.to_ndarray(format="yuv420p")[: frame.height])))  # luma, not RGB
            times.append(float(frame.time))
    return levels, times, kinds


def test_playback_remuxes_every_frame_in_order_with_its_audio(hq: Hq) -> None:
    view = hq.service.recording("sup1", hq.rec.device_id, hq.rec.recording_id)
    mp4 = b"".join(hq.service.play("sup1", view))
    assert mp4[4:8] == b"ftyp" and b"moof" in mp4
    levels, times, kinds = _frames(mp4)
    assert kinds == {"h264", "opus"}
    assert len(levels) == 50
    assert all(abs(got - luma(i)) <= 4 for i, got in enumerate(levels)), levels
    assert times[0] == 0.0 and abs(times[-1] - 4.9) < 0.01
    segs = [s.seq for s in view.segments]
    assert _audit(hq, "view-playback") == [("sup1", f"recording:{hq.rec.device_id}/{hq.rec.recording_id}", "ok",
                                             {"rendition": "video", "segments": segs})]
    custody = SqlLifecycle(hq.index).custody_log(f"{hq.rec.device_id}/{hq.rec.recording_id}")
    assert [(r.event_type, r.actor, r.detail) for r in custody if r.event_type == "playback"] == [
        ("playback", "sup1", {"rendition": "video", "seqs": segs})]


def test_playback_from_a_segment_starts_at_its_keyframe(hq: Hq) -> None:
    view = hq.service.recording("sup1", hq.rec.device_id, hq.rec.recording_id)
    second = view.segments[1]
    levels, times, _ = _frames(b"".join(hq.service.play("sup1", view, from_seq=second.seq)))
    first_frame = second.offset_ms * FPS // 1000
    assert times[0] == 0.0 and abs(levels[0] - luma(first_frame)) <= 4 and len(levels) == 50 - first_frame
    with pytest.raises(EvidenceError):
        hq.service.play("sup1", view, from_seq=view.events[0][0].seq)


def test_a_camera_is_chosen_by_name_and_an_unknown_one_refused(hq: Hq) -> None:
    view = hq.service.recording("sup1", hq.rec.device_id, hq.rec.recording_id)
    assert view.cameras == ["chest"]
    played = hq.service.play("sup1", view, camera="chest")
    assert played.start_ms == 0 and played.codecs.startswith("avc1.")
    assert len(_frames(b"".join(played))[0]) == 50
    with pytest.raises(EvidenceError, match="camera: one of chest") as err:
        hq.service.play("sup1", view, camera="helmet")
    assert err.value.kind == "not-found"
    assert [d.get("camera") for *_, d in _audit(hq, "view-playback")] == ["chest"]  # the refusal started nothing
    custody = SqlLifecycle(hq.index).custody_log(f"{hq.rec.device_id}/{hq.rec.recording_id}")
    assert [r.detail.get("camera") for r in custody if r.event_type == "playback"] == ["chest"]


def test_the_thermal_track_plays_colour_mapped(hq: Hq) -> None:
    view = hq.service.recording("sup1", hq.rec.device_id, hq.rec.recording_id)
    mp4 = b"".join(hq.service.play("sup1", view, rendition="thermal"))
    with av.open(io.BytesIO(mp4)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 50
    hot, cold = frames[0][12, 16].astype(int), frames[0][2, 2].astype(int)
    assert hot.sum() > cold.sum() + 150  # the person is brighter than the street around


def test_no_plaintext_reaches_the_disk(hq: Hq, tmp_path_factory: pytest.TempPathFactory) -> None:
    since = time.time() - 1
    view = hq.service.recording("sup1", hq.rec.device_id, hq.rec.recording_id)
    buf = io.BytesIO()
    seg = view.segments[1]
    open_segment(hq.rec.files[seg.seq], hq.rec.hq_key, buf.write)
    plaintext = buf.getvalue()
    probes = [plaintext[i : i + 48] for i in range(1000, len(plaintext) - 48, len(plaintext) // 7)]
    mp4 = b"".join(hq.service.play("sup1", view))
    assert any(p in mp4 for p in probes[1:])  # the probes are media bytes that playback carries
    folders = (hq.root, Path(tempfile.gettempdir()))
    assert plaintext_on_disk(folders, since, probes, tmp_path_factory.getbasetemp()) == []


def test_playback_without_the_daemon_says_what_to_start(hq: Hq) -> None:
    view = hq.service.recording("sup1", hq.rec.device_id, hq.rec.recording_id)
    hq.socket.unlink()  # the daemon is gone
    with pytest.raises(EvidenceError) as err:
        hq.service.play("sup1", view)
    assert err.value.kind == "unavailable" and "bodycam-hq decryptd" in str(err.value)
    assert _audit(hq, "playback-error")[-1][2] == "failed"
