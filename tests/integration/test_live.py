"""Live view end to end on loopback: a simulated unit publishes with WHIP through headquarters to a real Janus,
over a real coturn relay, while it records; viewers decode its burned-in clock; the evidence is untouched."""

from __future__ import annotations

import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import pytest

from tests.browser_util import OpsServer, http_sign_in
from tests.integration.agent_util import verify_json
from tests.integration.hq_util import wait_until
from tests.integration.test_agent_incident import manifests
from tests.live_util import JanusViewer, LiveRig, OpsViewer


@pytest.fixture
def rig(tmp_path: Path):  # type: ignore[no-untyped-def]
    r = LiveRig(tmp_path)
    yield r
    r.close()


def test_a_recording_unit_streams_through_turn_to_two_viewers_and_records_untouched(rig: LiveRig) -> None:
    data, cfg = rig.unit("it-live-1", auto_while_recording=True, ice_relay_only=True)
    agent = rig.start_agent(data, cfg)
    assert agent.ctl("start")["ok"]
    viewers = [JanusViewer(rig.janus.url, rig.janus.api_secret, "it-live-1").start() for _ in range(2)]
    try:
        wait_until(lambda: all(len(v.seen.frames) >= 45 for v in viewers), 40, "both viewers to decode 3 s")
        time.sleep(2)
    finally:
        for v in viewers:
            v.stop()
    status = agent.ctl("status")["data"]
    assert status["dropped"] == dict.fromkeys(status["dropped"], 0), status["dropped"]
    assert agent.ctl("stop")["ok"]
    wait_until(lambda: "live view: stopped (recording-stopped)" in agent.log(), 10, "the stream to stop")
    agent.terminate()
    assert agent.wait(60) == 0, agent.log()

    for v in viewers:
        indexes = [i for _, _, i in v.seen.frames]
        assert len(set(indexes)) >= 45
        lat = v.seen.latencies_ms()
        assert lat and statistics.median(lat) < 5000, lat[:10]  # the same clock: a sane glass-to-glass figure
    # the unit went through the TURN relay (relay-only), and sent one stream whatever the viewers
    assert [(a, o) for a, _, o, _ in rig.audit("live-publish")] == [("it-live-1", "ok")]

    doc = verify_json(data)
    assert doc["_exit"] == 0 and doc["ok"], json.dumps(doc["problems"], indent=1)
    ms = manifests(data)
    events = [m for m in ms if m["type"] == "event"]
    kinds = [m["event"] for m in events]
    assert kinds.count("live-start") == 1 and kinds.count("live-stop") == 1, kinds
    start = next(m for m in events if m["event"] == "live-start")["detail"]
    stop = next(m for m in events if m["event"] == "live-stop")["detail"]
    assert start["by"] == "auto" and start["trigger"] == "auto"
    assert stop["reason"] == "recording-stopped"
    segs = [m for m in ms if m["type"] == "segment"]
    assert sum(t["dropped"] for s in segs for t in s["tracks"]) == 0


def test_after_a_loss_burst_the_picture_comes_back_and_the_recording_is_untouched(tmp_path: Path) -> None:
    rig = LiveRig(tmp_path, impair=True)
    try:
        assert rig.impairment is not None
        data, cfg = rig.unit("it-live-2", auto_while_recording=True, ice_relay_only=True)
        agent = rig.start_agent(data, cfg)
        assert agent.ctl("start")["ok"]
        viewer = JanusViewer(rig.janus.url, rig.janus.api_secret, "it-live-2").start()
        try:
            wait_until(lambda: len(viewer.seen.frames) >= 30, 40, "the stream to flow")
            rig.impairment.drop_for(2.0)
            time.sleep(2.0)
            burst_end_ms = time.time() * 1000
            before = len(viewer.seen.frames)
            # fresh pictures again: captured after the burst, decoded with their time code intact
            wait_until(lambda: sum(1 for _, burned, _ in viewer.seen.frames[before:]
                                   if burned > burst_end_ms % (1 << 48)) >= 15, 20, "the picture to recover")
        finally:
            viewer.stop()
        assert rig.impairment.dropped > 0  # the burst really cut the unit's media
        status = agent.ctl("status")["data"]
        assert status["dropped"] == dict.fromkeys(status["dropped"], 0), status["dropped"]
        agent.terminate()
        assert agent.wait(60) == 0, agent.log()
    finally:
        rig.close()
    doc = verify_json(data)
    assert doc["_exit"] == 0 and doc["ok"], json.dumps(doc["problems"], indent=1)
    segs = [m for m in manifests(data) if m["type"] == "segment"]
    assert segs and sum(t["dropped"] for s in segs for t in s["tracks"]) == 0


def test_an_operator_opening_the_panel_starts_a_unit_over_the_request_channel_and_leaving_stops_it(
        tmp_path: Path, record_property: Any) -> None:
    """Not ``auto_while_recording``: headquarters asks with a signed ``live.start`` when an operator
    joins, and a ``live.stop`` when the last viewer leaves; the unit's chain names the operator by the
    channel's pseudonym, the one headquarters' audit log keeps."""
    from agent.evidence.keys import load_receipt_private
    from hq.requests import pseudonym

    rig = LiveRig(tmp_path, serve=lambda hq_dir, args: OpsServer.start(hq_dir, extra_args=args))
    try:
        server: OpsServer = rig.hq
        http, csrf = http_sign_in(server, "olivia")
        # a unit with live view off refuses the request, and the operator is told so at once
        off = rig.start_agent(*rig.unit("it-live-off", enabled=False))
        refused = OpsViewer(http, server.url, csrf, "it-live-off").post("/ops/live/it-live-off/join", {})
        assert refused.status_code == 409, refused.text
        assert "live view is off on this unit" in refused.json()["error"]["message"]
        off.terminate()
        assert off.wait(60) == 0, off.log()

        data, cfg = rig.unit("it-live-3", ice_relay_only=True, idle_stop_s=2.0)
        agent = rig.start_agent(data, cfg)
        assert agent.ctl("start")["ok"]
        units = http.get(f"{server.url}/ops/units").text  # where an operator finds "Watch live"
        assert 'href="/ops/live/it-live-3" aria-label="Watch it-live-3 live"' in units
        viewer = OpsViewer(http, server.url, csrf, "it-live-3").start(timeout_s=60)
        try:
            wait_until(lambda: len(viewer.seen.frames) >= 15, 40, "the requested stream to reach the viewer")
            status = http.get(f"{server.url}/ops/live/it-live-3/status").json()
            assert (status["streaming"], status["viewers"]) == (True, 1)
        finally:
            viewer.stop()
        assert viewer.joined_s is not None
        record_property("join_to_stream_s", round(viewer.joined_s, 3))
        wait_until(lambda: "live view: stopped (no-viewers)" in agent.log(), 30, "the stream to stop after the leave")
        wait_until(lambda: rig.audit("live-unpublish"), 20, "the unit to end its WHIP session")
        assert agent.ctl("stop")["ok"]
        agent.terminate()
        assert agent.wait(60) == 0, agent.log()
    finally:
        rig.close()

    who = pseudonym(load_receipt_private(rig.hq_dir / "keys" / "receipt.key"), "olivia")
    live_requests = [(a, d["kind"], d["requested_by"]) for a, t, o, d in rig.audit("unit-request")
                     if o == "ok" and t == "it-live-3"]
    assert live_requests[0] == ("olivia", "live.start", who) and live_requests[-1] == ("olivia", "live.stop", who)
    results = [(t, d["kind"], d["result"]) for _, t, _, d in rig.audit("unit-request-result")]
    assert results[0] == ("it-live-off", "live.start", "refused")
    assert ("it-live-3", "live.start", "done") in results
    assert [(a, t, o, d.get("reason")) for a, t, o, d in rig.audit("live-join")] == [
        ("olivia", "it-live-off", "failed", "unit-refused"), ("olivia", "it-live-3", "ok", None)]
    assert rig.audit("live-join")[1][3]["pseudonym"] == who
    assert [(a, d["reason"]) for a, _, _, d in rig.audit("live-leave")] == [("olivia", "left")]

    ms = manifests(data)
    events = [m for m in ms if m["type"] == "event" and m["event"].startswith("live-")]
    assert [m["event"] for m in events] == ["live-start", "live-stop"]
    start, stop = events[0]["detail"], events[1]["detail"]
    assert (start["by"], start["trigger"], start["viewers"]) == (who, "request", 1)
    assert (stop["by"], stop["reason"], stop["viewers"], stop["peak_viewers"]) == (who, "no-viewers", 0, 1)
    assert "olivia" not in json.dumps(events)  # the unit never learns the operator's name
    doc = verify_json(data)
    assert doc["_exit"] == 0 and doc["ok"], json.dumps(doc["problems"], indent=1)
    segs = [m for m in ms if m["type"] == "segment"]
    assert segs and sum(t["dropped"] for s in segs for t in s["tracks"]) == 0


def test_a_viewer_on_another_node_watches_a_unit_publishing_through_the_first(
        tmp_path: Path, fresh_postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two headquarters nodes on one PostgreSQL and one Janus: olivia joins through node 2, whose
    request reaches the unit over its poll held by node 1; the unit publishes through node 1 and node 2
    finds the stream in the media server. sam watches through node 1. The unit adds up both nodes'
    viewer counts, so olivia leaving node 2 does not stop the stream sam watches."""
    from agent.evidence.keys import load_receipt_private
    from hq.requests import pseudonym

    monkeypatch.setenv("BODYCAM_HQ_DATABASE_URL", fresh_postgres_url)  # the unit is enrolled in the shared index
    started: list[tuple[str, ...]] = []

    def node_1(hq_dir: Path, args: tuple[str, ...]) -> OpsServer:
        started.append(args)
        return OpsServer.start(hq_dir, database_url=fresh_postgres_url, extra_args=args)

    rig = LiveRig(tmp_path, serve=node_1)
    # a node of its own data dir with the same keys, as docs/deployment-hq.md deploys several
    (tmp_path / "hq2").mkdir()
    shutil.copytree(rig.hq_dir / "keys", tmp_path / "hq2" / "keys")
    node2 = OpsServer(tmp_path / "hq2", fresh_postgres_url, users=rig.hq.users)
    try:
        node2.serve(started[0])
        data, cfg = rig.unit("it-live-4", ice_relay_only=True, idle_stop_s=2.0)  # enrolled through node 1
        agent = rig.start_agent(data, cfg)
        assert agent.ctl("start")["ok"]
        olivia = OpsViewer(*_signed_in(node2, "olivia"), "it-live-4").start(timeout_s=60)
        sam = OpsViewer(*_signed_in(rig.hq, "sam"), "it-live-4").start(timeout_s=60)
        try:
            wait_until(lambda: len(olivia.seen.frames) >= 15 and len(sam.seen.frames) >= 15, 40,
                       "both nodes' viewers to decode the stream")
        finally:
            olivia.stop()
        seen = len(sam.seen.frames)
        time.sleep(5.0)  # past the unit's idle_stop_s: node 2 has no viewer left, node 1 has sam
        assert "live view: stopped" not in agent.log()
        wait_until(lambda: len(sam.seen.frames) >= seen + 30, 20, "sam to go on receiving")
        sam.stop()
        wait_until(lambda: "live view: stopped (no-viewers)" in agent.log(), 30, "the stream to stop")
        agent.terminate()
        assert agent.wait(60) == 0, agent.log()
    finally:
        node2.stop()
        rig.close()

    publishes = [(r["actor"], r["outcome"]) for r in rig.hq.audit("live-publish")]
    assert publishes == [("it-live-4", "ok")]  # one stream, through node 1 only
    joins = [(r["actor"], r["outcome"]) for r in rig.hq.audit("live-join")]
    assert sorted(joins) == [("olivia", "ok"), ("sam", "ok")]
    who = pseudonym(load_receipt_private(rig.hq_dir / "keys" / "receipt.key"), "olivia")
    events = [m for m in manifests(data) if m["type"] == "event" and m["event"].startswith("live-")]
    assert [m["event"] for m in events] == ["live-start", "live-stop"]
    assert events[0]["detail"]["by"] == who and events[0]["detail"]["trigger"] == "request"
    assert (events[1]["detail"]["reason"], events[1]["detail"]["peak_viewers"]) == ("no-viewers", 2)


def _signed_in(server: OpsServer, user: str) -> tuple[Any, str, str]:
    http, csrf = http_sign_in(server, user)
    return http, server.url, csrf


def test_live_sound_when_configured_and_none_while_the_wearer_has_muted(rig: LiveRig) -> None:
    data, cfg = rig.unit("it-live-5", auto_while_recording=True, audio="on")
    agent = rig.start_agent(data, cfg)
    assert agent.ctl("start")["ok"]
    viewer = JanusViewer(rig.janus.url, rig.janus.api_secret, "it-live-5").start()
    try:
        wait_until(lambda: len(viewer.seen.sound) >= 50 and len(viewer.seen.frames) >= 15, 40,
                   "the viewer to hear and see the unit")
        assert max(peak for _, peak in viewer.seen.sound) > 0.01  # the simulated microphone, not silence
        assert agent.ctl("mute", on=True)["ok"]
        time.sleep(1.0)  # what was on its way when the wearer muted
        heard, seen = len(viewer.seen.sound), len(viewer.seen.frames)
        time.sleep(3.0)
        muted_ms = time.time() * 1000
        loud_while_muted = [p for at, p in viewer.seen.sound[heard:] if p > 0.01]
        assert loud_while_muted == [], loud_while_muted[:5]  # nothing of the microphone reaches the viewer
        assert len(viewer.seen.frames) >= seen + 15  # the picture goes on
        assert agent.ctl("mute", on=False)["ok"]
        wait_until(lambda: any(at > muted_ms and p > 0.01 for at, p in viewer.seen.sound), 20, "the sound to return")
    finally:
        viewer.stop()
    status = agent.ctl("status")["data"]
    assert status["dropped"] == dict.fromkeys(status["dropped"], 0), status["dropped"]
    agent.terminate()
    assert agent.wait(60) == 0, agent.log()
    start = next(m for m in manifests(data) if m["type"] == "event" and m["event"] == "live-start")
    assert start["detail"]["audio"] is True
    doc = verify_json(data)
    assert doc["_exit"] == 0 and doc["ok"], json.dumps(doc["problems"], indent=1)
