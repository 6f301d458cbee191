"""Live section: a simulated unit streams while it records, through headquarters, coturn and a real Janus on loopback.

Figures: glass-to-glass latency (the camera burns the capture's UTC millisecond into each frame,
drivers/sim_timecode.py; an aiortc viewer subscribed to Janus reads it from every decoded frame and
compares it with this host's clock: capture, live encoder, WHIP publisher, TURN relay, Janus,
decoder), median and p95; the time the picture takes to come back after a 2 s loss burst on the
unit's link (a user-space UDP relay in front of TURN, tests/udp_impair.py): from the burst's end
to the first decoded frame captured after it, in the operations room's live panel in Debian's
chromium (the goal) and at the aiortc viewer. aiortc's receiver is no measure of the unit here:
its jitter buffer (512 packets for video) hands nothing on while the oldest packet is missing,
so the burst's packets that neither Janus nor the unit's retransmission history can restore stall
it until 512 packets have come past the gap (about 8 s at 500-800 kbit/s), whatever keyframes
the unit sends; chromium drops the gap and decodes from the next keyframe. The agent's extra
CPU seconds per second while streaming (the same recording with live view off, then streaming);
the recorder's dropped frames while streaming (goal 0); and how long a unit that is not in auto mode takes from a
``live.start`` queued at headquarters (as another node would: the node holding the unit's poll
finds it on its next look at the index) to the first frame a viewer decodes.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.browser_util import Browser, OpsServer, sign_in
from tests.integration.agent_util import AgentProcess
from tests.live_util import JanusViewer, LiveRig

from .common import Result, proc_stat_cpu_s

log = logging.getLogger("bench.live")

LATENCY_GOAL_MEDIAN_MS = 300
LATENCY_GOAL_P95_MS = 500
BURST_S = 2.0
KEYFRAME_INTERVAL_S = 1.0
RECOVERY_GOAL_S = KEYFRAME_INTERVAL_S + 1.0
REQUEST_GOAL_S = 5.0  # docs/deployment-hq.md: about 1 s to the unit, then its WebRTC connect


def _request_to_first_frame_s(rig: LiveRig) -> float | None:
    """Queue a signed live.start for a recording unit that is not in auto mode; seconds until a
    viewer decodes its first frame (None: none within 30 s)."""
    from agent.evidence.keys import load_receipt_private
    from hq.audit import Auditor
    from hq.index import open_index
    from hq.requests import UnitRequests

    data, cfg = rig.unit("bench-live-req", ice_relay_only=True)
    agent = rig.start_agent(data, cfg)
    viewer: JanusViewer | None = None
    try:
        agent.ctl("start")
        time.sleep(3.0)  # its request poll is open
        key = load_receipt_private(rig.hq_dir / "keys" / "receipt.key")
        with open_index(rig.hq_dir) as index:
            requests = UnitRequests(index, key, Auditor(index, "bench", time.time_ns), time.time_ns)
            t0 = time.monotonic()
            requests.queue("bench-live-req", "live.start", {"viewers": 1}, "bench", "bench: live view", ttl_s=30)
        viewer = JanusViewer(rig.janus.url, rig.janus.api_secret, "bench-live-req").start()
        deadline = t0 + 30
        while not viewer.seen.frames and time.monotonic() < deadline:
            time.sleep(0.01)
        return round(time.monotonic() - t0, 3) if viewer.seen.frames else None
    finally:
        if viewer is not None:
            viewer.stop()
        agent.terminate()
        agent.wait(60)


def _browser_recovery_s(tmp: Path) -> float | None:
    """Seconds from the end of a loss burst on a streaming unit's link to the first frame captured
    after it that the live panel decodes in chromium (None: none within 30 s)."""
    rig = LiveRig(tmp, impair=True, serve=lambda hq_dir, args: OpsServer.start(
        hq_dir, users={"olivia": ("operator",)}, extra_args=args))
    browser: Browser | None = None
    agent: AgentProcess | None = None
    try:
        assert rig.impairment is not None
        server: OpsServer = rig.hq
        data, cfg = rig.unit("bench-live-web", auto_while_recording=True, ice_relay_only=True)
        agent = rig.start_agent(data, cfg)
        agent.ctl("start")
        browser = Browser()
        page = browser.new_page()
        sign_in(page, server, "olivia")
        page.goto(f"{server.url}/ops/live/bench-live-web")  # the panel joins on load
        page.wait_for_function("() => window.bodycamLive && window.bodycamLive.decodedCodes >= 30", timeout=90_000)
        time.sleep(3.0)  # the rate has settled, as for the aiortc viewer
        rig.impairment.drop_for(BURST_S)
        time.sleep(BURST_S)
        end_ms = time.time() * 1000
        fresh = f"(window.bodycamLive.latencies.find(l => l.at - l.ms > {end_ms}) || {{at: null}}).at"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            first = page.evaluate(fresh)
            if first is not None:
                return round((first - end_ms) / 1000, 3)
            time.sleep(0.05)
        return None
    finally:
        if browser is not None:
            browser.close()
        if agent is not None:
            agent.terminate()
            agent.wait(60)
        rig.close()


def _cpu_s(agent: AgentProcess) -> float:
    return proc_stat_cpu_s(Path(f"/proc/{agent.proc.pid}/stat").read_text())


def _recording_cpu(rig: LiveRig, device_id: str, seconds: float, **live: Any) -> tuple[float, dict[str, int], Any]:
    """(CPU s per s, dropped frames, the agent) of a unit recording for ``seconds`` (warm-up excluded)."""
    data, cfg = rig.unit(device_id, **live)
    agent = rig.start_agent(data, cfg)
    agent.ctl("start")
    time.sleep(3.0)  # the encoders and, if on, the stream are up
    cpu0, t0 = _cpu_s(agent), time.monotonic()
    time.sleep(seconds)
    per_s = (_cpu_s(agent) - cpu0) / (time.monotonic() - t0)
    dropped = agent.ctl("status")["data"]["dropped"]
    return per_s, dropped, agent


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(quick: bool) -> Result:
    seconds = 8.0 if quick else 20.0
    with tempfile.TemporaryDirectory(prefix="bodycam-bench-live-") as tmp:
        rig = LiveRig(Path(tmp), impair=True)
        try:
            assert rig.impairment is not None
            base_cpu, base_drops, base = _recording_cpu(rig, "bench-live-off", seconds, enabled=False)
            base.terminate()
            base.wait(60)
            request_s = _request_to_first_frame_s(rig)
            viewer: JanusViewer | None = None
            try:
                data, cfg = rig.unit("bench-live-on", auto_while_recording=True, ice_relay_only=True)
                agent = rig.start_agent(data, cfg)
                agent.ctl("start")
                viewer = JanusViewer(rig.janus.url, rig.janus.api_secret, "bench-live-on").start()
                time.sleep(3.0)
                cpu0, t0, mark = _cpu_s(agent), time.monotonic(), len(viewer.seen.frames)
                time.sleep(seconds)
                live_cpu = (_cpu_s(agent) - cpu0) / (time.monotonic() - t0)
                window = viewer.seen.frames[mark:]
                latencies = [a - b for a, b, _ in window if abs(a % (1 << 48) - b) < 60_000]
                rig.impairment.drop_for(BURST_S)
                time.sleep(BURST_S)
                burst_end_ms = time.time() * 1000
                after = len(viewer.seen.frames)
                recovery_s = None
                deadline = time.monotonic() + 20
                while recovery_s is None and time.monotonic() < deadline:
                    fresh = [arr for arr, burned, _ in viewer.seen.frames[after:] if burned > burst_end_ms % (1 << 48)]
                    if fresh:
                        recovery_s = round((fresh[0] - burst_end_ms) / 1000, 3)
                    time.sleep(0.02)
                dropped = agent.ctl("status")["data"]["dropped"]
                status = agent.ctl("status")["data"]
            finally:
                if viewer is not None:
                    viewer.stop()
        finally:
            rig.close()
        browser_recovery_s = _browser_recovery_s(Path(tmp) / "web")
    return {
        "seconds": seconds,
        "frames_decoded": len(window),
        "glass_to_glass_ms": {
            "median": round(statistics.median(latencies), 1) if latencies else None,
            "p95": round(_percentile(latencies, 0.95), 1) if latencies else None,
            "goal_median": LATENCY_GOAL_MEDIAN_MS, "goal_p95": LATENCY_GOAL_P95_MS,
        },
        "recovery_after_burst_s": browser_recovery_s, "burst_s": BURST_S, "recovery_goal_s": RECOVERY_GOAL_S,
        "recovery_after_burst_aiortc_s": recovery_s,
        "request_to_first_frame_s": request_s, "request_goal_s": REQUEST_GOAL_S,
        "agent_cpu_s_per_s": {"recording": round(base_cpu, 3), "recording_and_streaming": round(live_cpu, 3),
                              "extra_for_streaming": round(live_cpu - base_cpu, 3)},
        "recorder_dropped_while_streaming": sum(dropped.values()),
        "recorder_dropped_without_streaming": sum(base_drops.values()),
        "dropped_goal": 0,
        "state": status.get("state"),
        "what": {
            "glass_to_glass_ms": "capture (the burned-in UTC ms) to decoded at an aiortc viewer on this host: "
                                 "live encoder, WHIP publisher, TURN relay, Janus, decoder",
            "request_to_first_frame_s": "a live.start queued in the index (found by the node holding the unit's "
                                        "poll on its next look) to the first frame an aiortc viewer decodes",
            "recovery_after_burst_s": "after every packet of the unit's link was dropped for burst_s: the end of "
                                      "the burst to the first frame captured after it that the live panel "
                                      "decodes in chromium",
            "recovery_after_burst_aiortc_s": "the same at the aiortc viewer, whose jitter buffer waits for 512 "
                                             "packets past a gap the burst leaves (a figure of aiortc's, not the "
                                             "unit's)",
            "agent_cpu_s_per_s": "bodycam run's CPU seconds per wall second, recording 1280x720 30 fps with and "
                                 "without a 640x360 15 fps live stream (two runs: noisy on a busy machine)",
        },
    }
