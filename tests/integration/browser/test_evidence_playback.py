"""Evidence in a real browser: a simulated unit whose camera burns its UTC clock into every frame
records, marks and syncs to a real headquarters whose decrypt daemon (``bodycam-hq decryptd``)
the test starts; a supervisor searches, opens the recording and presses play, and the video
element advances through frames whose burned-in time is the camera's at that point of the
recording; a mark on the timeline seeks there; an operator and an auditor are refused (403,
audited); every search, view and playback is in the audit trail; no decrypted byte lands on
disk; axe-core finds nothing on the pages."""

from __future__ import annotations

import io
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.evidence.decrypt import open_segment
from agent.evidence.keys import load_hq_private
from agent.store import Store
from hq.index import open_index
from hq.records import RecordingFilter
from tests.browser_util import OpsServer, assert_accessible, screenshot, sign_in
from tests.burnin_util import camera, read_burned_time_ms
from tests.fakes import FakeClock
from tests.integration.agent_util import AgentProcess
from tests.integration.hq_util import provision_for_hq, wait_until
from tests.playback_daemon import DecryptDaemon
from tests.playback_util import plaintext_on_disk

UNIT = "it-evidence"
NOTE = "suspect at the door"
ONE_FRAME_MS = 50  # the simulated camera runs at 30 fps
# JS: the label box of the next ``count`` frames the video presents, as limited-range luma (the
# inverse of the browser's BT.601 YUV to RGB), with the media time of each frame.
GRAB = """async ([x, y, w, h, count]) => {
  const v = document.getElementById("video");
  const c = document.createElement("canvas");
  c.width = v.videoWidth; c.height = v.videoHeight;
  const g = c.getContext("2d", { willReadFrequently: true });
  const out = [];
  return await new Promise((resolve) => {
    const grab = (now, meta) => {
      g.drawImage(v, 0, 0);
      const d = g.getImageData(x, y, w, h).data;
      const luma = new Array(w * h);
      for (let i = 0; i < w * h; i++) {
        luma[i] = Math.round(16 + (65.481 * d[4 * i] + 128.553 * d[4 * i + 1] + 24.966 * d[4 * i + 2]) / 255);
      }
      out.push({ media_s: meta.mediaTime, base_ms: window.bodycamPlayer.baseMs, luma: luma });
      if (out.length >= count) resolve(out); else v.requestVideoFrameCallback(grab);
    };
    v.requestVideoFrameCallback(grab);
  });
}"""


@dataclass
class Rig:
    server: OpsServer
    daemon: DecryptDaemon
    unit: Path
    recording_id: str
    segments: list[dict[str, Any]]  # {seq, utc_start_ms} of the recording's segments, as headquarters holds them


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    tmp = tmp_path_factory.mktemp("evidence")
    hq_dir, unit = tmp / "hq", tmp / "unit"
    run = tmp / "run"
    run.mkdir(mode=0o750)
    sock = run / "decryptd.sock"
    server = OpsServer.start(hq_dir, extra_args=["--decryptd-socket", str(sock)])
    daemon = None
    try:
        daemon = DecryptDaemon(hq_dir / "keys" / "hq.key", sock)
        cfg = provision_for_hq(unit, hq_dir, server.url, UNIT, segment_s=2.0)
        agent = AgentProcess(unit, cfg)
        try:
            agent.wait_ready()
            assert agent.ctl("start")["ok"]
            time.sleep(3.5)
            assert agent.ctl("mark", note=NOTE)["ok"]
            time.sleep(3.0)
            assert agent.ctl("stop")["ok"]

            def synced() -> bool:
                with Store(unit / "index.sqlite", FakeClock()) as store:
                    rows = store.segments()
                return bool(rows) and all(r.state == "acknowledged" for r in rows if r.kind == "segment")

            wait_until(synced, 90, "the recording to reach headquarters")
        finally:
            agent.terminate()
            agent.wait(60)
        with open_index(hq_dir) as index:
            found, _ = index.search_recordings(RecordingFilter(device_id=UNIT))
            assert len(found) == 1, found
            entries = index.recording_entries(UNIT, found[0].recording_id)
        segments = [{"seq": e.seq, "utc_start_ms": e.utc_start_ns // 1_000_000} for e in entries if e.kind == "segment"]
        yield Rig(server, daemon, unit, found[0].recording_id, segments)
    finally:
        if daemon is not None:
            assert daemon.stop() == 0
        server.stop()


def _burned_times(page: Any, rig: Rig, frames: int) -> list[tuple[float, int, int, float]]:
    """(position on the timeline in ms, the time the camera burned into the frame shown there, the
    time the recording's clock says it is there, the read's error) for the next ``frames``."""
    width, height = page.evaluate("[document.getElementById('video').videoWidth, "
                                  "document.getElementById('video').videoHeight]")
    cam = camera(width, height)
    x, y, w, h = cam.label_box
    shots = page.evaluate(GRAB, [x, y, w, h, frames])
    timeline = page.evaluate("JSON.parse(document.getElementById('player').dataset.timeline)")
    out = []
    for shot in shots:
        at_ms = shot["base_ms"] + shot["media_s"] * 1000
        seg = [s for s in timeline["segments"] if s["offset_ms"] <= at_ms][-1]
        expected = seg["utc_start_ms"] + round(at_ms - seg["offset_ms"])
        box = np.array(shot["luma"], dtype=np.int32).clip(0, 255).astype(np.uint8).reshape(h, w)
        found, err = read_burned_time_ms(cam, box, expected)
        out.append((at_ms, found, expected, err))
    return out


def test_a_supervisor_finds_opens_and_plays_the_recording_through_its_burned_clock(
        rig: Rig, page: Any, record_property: Any) -> None:
    sign_in(page, rig.server, "sam")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Evidence").click()
    page.get_by_label("Unit").fill(UNIT)
    page.get_by_label("Marks").select_option("yes")
    page.get_by_role("button", name="Search").click()
    row = page.locator(f'#recordings tr[data-recording="{rig.recording_id}"]')
    row.wait_for()
    assert "verified" in row.inner_text()
    assert_accessible(page)
    screenshot(page, "evidence-search")

    row.get_by_role("link", name=rig.recording_id).click()
    page.locator("#recording-id").wait_for()
    assert page.locator("#segments tbody tr").count() == len(rig.segments)
    # the mark's note was sealed to headquarters: decryptd opened it for this page
    page.locator("#marks .mark-note", has_text=NOTE).wait_for()
    assert "GNSS" in page.locator("#trail-status").inner_text() or "fix" in page.locator("#trail-status").inner_text()
    assert_accessible(page)

    page.get_by_role("button", name="Play", exact=True).click()
    wait_until(lambda: page.evaluate("window.bodycamPlayer.firstFrameAt !== null"), 60, "the first frame")
    assert page.evaluate("window.bodycamPlayer.mode") == "mse"  # the stream is placed on the recording's timeline
    first_ms = page.evaluate("window.bodycamPlayer.firstFrameAt - window.bodycamPlayer.pressedAt")
    record_property("press_play_to_first_frame_ms", round(first_ms))
    reads = _burned_times(page, rig, 6)
    screenshot(page, "evidence-playing")
    # each frame shows the camera's clock at its place on the timeline (within about a frame) ...
    for at_ms, found, expected, err in reads:
        assert err < 25, f"at {at_ms:.0f} ms the label does not read as a time (error {err:.1f})"
        assert abs(found - expected) <= ONE_FRAME_MS, f"at {at_ms:.0f} ms: burned {found}, timeline {expected}"
    # ... and the video advances through them
    positions = [r[0] for r in reads]
    assert positions == sorted(positions) and positions[-1] > positions[0]
    assert [r[1] for r in reads] == sorted(r[1] for r in reads) and reads[-1][1] > reads[0][1]
    if page.locator("#thermal").count():
        wait_until(lambda: page.evaluate("document.getElementById('thermal').currentTime > 0.2"), 30,
                   "the thermal rendition to play beside the camera")

    # the mark on the timeline: playback jumps there and shows the camera's clock of that moment
    mark_ms = int(page.locator("#marks button.seek").first.get_attribute("data-at-ms"))
    page.locator("#marks button.seek").first.click()
    wait_until(lambda: page.evaluate(
        f"Math.abs(window.bodycamPlayer.baseMs + document.getElementById('video').currentTime * 1000 - {mark_ms}) < 600"
        " && !document.getElementById('video').paused"), 60, "playback to reach the mark")
    at_ms, found, expected, err = _burned_times(page, rig, 1)[0]
    assert err < 25 and abs(found - expected) <= ONE_FRAME_MS and abs(at_ms - mark_ms) < 1500

    # the search, the view, the trail and the playback are in the audit trail, as sam, on the recording
    target = f"recording:{UNIT}/{rig.recording_id}"
    for event in ("view-evidence", "view-position-trail", "view-playback"):
        records = [r for r in rig.server.audit(event) if r["actor"] == "sam" and r["target"] == target]
        assert records and all(r["outcome"] == "ok" and r["component"] == "hq-web" for r in records), event
    assert [r for r in rig.server.audit("evidence-search") if r["actor"] == "sam" and r["target"] == f"device:{UNIT}"]


def test_playing_from_a_mark_streams_from_its_segment_on_the_recording_clock(rig: Rig, page: Any) -> None:
    sign_in(page, rig.server, "sam")
    page.goto(f"{rig.server.url}/ops/evidence/{UNIT}/{rig.recording_id}")
    seek = page.locator("#marks button.seek").first
    mark_ms = int(seek.get_attribute("data-at-ms"))
    seek.click()  # nothing loaded yet: the player asks for the segment holding the mark
    wait_until(lambda: page.evaluate("window.bodycamPlayer.firstFrameAt !== null"), 60, "the first frame")
    timeline = page.evaluate("JSON.parse(document.getElementById('player').dataset.timeline)")
    holding = [s for s in timeline["segments"] if s["offset_ms"] <= mark_ms][-1]
    assert holding["seq"] != timeline["segments"][0]["seq"]  # a later segment, so this is a real seek
    assert page.evaluate("window.bodycamPlayer.seq") == holding["seq"]
    at_ms, found, expected, err = _burned_times(page, rig, 1)[0]
    assert err < 25 and abs(found - expected) <= ONE_FRAME_MS and abs(at_ms - mark_ms) < 1000
    # the camera and the thermal rendition, each audited with the segments it decrypts from there
    plays = [r["detail"] for r in rig.server.audit("view-playback") if r["actor"] == "sam"][-2:]
    assert {p["rendition"] for p in plays} == {"video", "thermal"}
    assert all(p["segments"][0] == holding["seq"] for p in plays)


def test_an_operator_and_an_auditor_are_refused_and_the_refusals_audited(rig: Rig, page: Any) -> None:
    base = f"{rig.server.url}/ops/evidence"
    for name in ("olivia", "ada"):
        sign_in(page, rig.server, name)
        assert page.locator("header nav").get_by_role("link", name="Evidence").count() == 0
        for path in ("", f"/{UNIT}/{rig.recording_id}", f"/{UNIT}/{rig.recording_id}/play.mp4"):
            answer = page.goto(base + path)
            assert answer is not None and answer.status == 403, (name, path)
        page.context.clear_cookies()
    refused = [(r["actor"], r["target"]) for r in rig.server.audit("access-denied")]
    for name in ("olivia", "ada"):
        assert (name, f"path:/ops/evidence/{UNIT}/{rig.recording_id}/play.mp4") in refused
    assert not [r for r in rig.server.audit("view-playback") if r["actor"] in ("olivia", "ada")]


def _plaintext(rig: Rig, seq: int) -> bytes:
    buf = io.BytesIO()
    open_segment(rig.server.data / "evidence" / UNIT / f"{seq:010d}.bcs",
                 load_hq_private(rig.server.data / "keys" / "hq.key"), buf.write)
    return buf.getvalue()


def test_no_decrypted_byte_is_on_disk_after_playback(rig: Rig, page: Any,
                                                    tmp_path_factory: pytest.TempPathFactory) -> None:
    since = time.time() - 1
    seq = rig.segments[1]["seq"]
    plaintext = _plaintext(rig, seq)
    others = [_plaintext(rig, s["seq"]) for s in rig.segments if s["seq"] != seq]
    sign_in(page, rig.server, "sam")
    page.goto(f"{rig.server.url}/ops/evidence/{UNIT}/{rig.recording_id}")
    page.get_by_role("button", name="Play", exact=True).click()
    wait_until(lambda: page.evaluate("document.getElementById('video').currentTime > 1.5"), 60, "playback")
    mp4 = bytes(page.evaluate(f"fetch('/ops/evidence/{UNIT}/{rig.recording_id}/play.mp4?from_seq={seq}')"
                              ".then(r => r.arrayBuffer()).then(b => Array.from(new Uint8Array(b)))"))
    # probes: 64-byte runs of this segment's media that playback carries and no other segment holds
    # (the scrolling bars code alike from frame to frame; such runs say nothing about this moment)
    probes = [run for i in range(1000, len(plaintext) - 64, max(1, len(plaintext) // 60))
              if (run := plaintext[i : i + 64]) in mp4 and not any(run in o for o in others)]
    assert len(probes) >= 3, f"only {len(probes)} distinctive runs of media found"
    # headquarters' data, the decrypt daemon's folder and every temporary folder (the browser's profile too)
    folders = (rig.server.data, rig.daemon.socket.parent, Path(tempfile.gettempdir()))
    assert plaintext_on_disk(folders, since, probes, tmp_path_factory.getbasetemp()) == []

pytestmark = pytest.mark.slow
