"""Agent section: the real agent at 1080p30 + thermal + audio on simulated sensors, and what its video encoder costs."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import types
from pathlib import Path

from agent.config import Config, RecordingConfig
from agent.media.encoders import VideoEncoder
from hal.camera import VideoFrame

from .agentproc import AgentRun, Recording, prepare, verify
from .common import Result, guarded, machine, ratio

log = logging.getLogger("bench.agent")

WIDTH, HEIGHT, FPS = 1920, 1080, 30
SCENE = {"scene": "street", "light": "day"}  # motion, texture and sensor noise: the encoder works as in the field
PRE_EVENT_S = 120.0
ENCODER_FRAMES = 300


def full_hd(config: Config) -> Config:
    chest = config.cameras.get("chest")
    if chest is None:
        raise ValueError("the provisioned config has no chest camera")
    options = types.MappingProxyType({**chest.options, "width": WIDTH, "height": HEIGHT, "fps": FPS, **SCENE})
    cameras = types.MappingProxyType({**config.cameras, "chest": dataclasses.replace(chest, options=options)})
    recording = dataclasses.replace(config.recording, pre_event_s=PRE_EVENT_S)
    return dataclasses.replace(config, cameras=cameras, recording=recording)


def encoder_cost(frames: int) -> Result:
    """CPU per frame of the agent's VideoEncoder at 1080p, in this process, on the simulated camera's frames."""
    from drivers.sim_camera import SimCamera
    from drivers.system_clock import SystemClock

    rec = RecordingConfig()
    cam = SimCamera(name="chest", clock=SystemClock(), width=WIDTH, height=HEIGHT, fps=FPS, **SCENE)
    enc = VideoEncoder("chest", WIDTH, HEIGHT, FPS, 1, bitrate_bps=rec.video_bitrate_bps,
                       gop_frames=max(1, round(FPS * rec.keyframe_interval_s)))
    period_ns = 1_000_000_000 // FPS
    utc0 = time.time_ns()
    render_cpu = encode_cpu = 0.0
    out_bytes = 0
    try:
        for i in range(frames):
            c0 = time.process_time()
            data = cam.render(i, utc0 + i * period_ns)
            c1 = time.process_time()
            frame = VideoFrame("chest", i, (i + 1) * period_ns, (i + 1) * period_ns, WIDTH, HEIGHT, "yuv420p", data)
            packets = enc.encode(frame)
            encode_cpu += time.process_time() - c1
            render_cpu += c1 - c0
            out_bytes += sum(len(p.data) for p in packets)
        out_bytes += sum(len(p.data) for p in enc.flush())
    finally:
        enc.close()
    return {
        "params": {"frames": frames, "width": WIDTH, "height": HEIGHT, "fps": FPS, **SCENE,
                   "codec": "libx264 ultrafast zerolatency, threads 1", "bitrate_bps": rec.video_bitrate_bps},
        "encode_cpu_ms_per_frame": round(encode_cpu * 1000 / frames, 2),
        "encode_cpu_s_per_footage_s": round(encode_cpu * FPS / frames, 3),
        "sim_render_cpu_ms_per_frame": round(render_cpu * 1000 / frames, 2),
        "sim_render_cpu_s_per_footage_s": round(render_cpu * FPS / frames, 3),
        "achieved_bitrate_bps": round(out_bytes * 8 * FPS / frames),
    }


def run(quick: bool, workdir: Path) -> Result:
    duration_s = 10 if quick else 60
    data = workdir / "agent-data"
    cfg, described = prepare(data, sim=True, adjust=full_hd)
    media_tracks = len(described["cameras"]) + sum(1 for s in ("thermal", "microphone") if s in described["enabled"])
    out: Result = {
        "machine": machine(),
        "params": {"record_s": duration_s, "sim": True, "config": described, "data_dir": str(data)},
    }
    one_core = frozenset([min(os.sched_getaffinity(0))])
    for key, cpus in (("process", None), ("one_core", one_core)):
        agent = AgentRun(data, cfg, sim=True, cpus=cpus)
        # the full run lets the pre-event buffer fill before it starts, so peak RSS is with a full buffer
        settle_s = PRE_EVENT_S if not quick and cpus is None else 2.0

        def record(agent: AgentRun = agent, settle_s: float = settle_s) -> Result:
            try:
                agent.spawn(max_s=duration_s + 600)
                return agent.record(Recording(duration_s, settle_s=settle_s), media_tracks)
            finally:
                agent.terminate()

        log.info("recording %d s of the street at 1080p30 %s", duration_s,
                 "on any CPU" if cpus is None else f"confined to CPU {sorted(cpus)}")
        out[key] = guarded(f"agent process ({key})", record)
        out[key]["cpus"] = "any" if cpus is None else sorted(cpus)
        out[key]["pre_event_filled_s_at_start"] = min(PRE_EVENT_S, settle_s)
        out[key]["log"] = agent.findings()
    out["pre_event_what"] = (f"pre_event_s = {PRE_EVENT_S:.0f}; before the start the buffer holds what the agent saw "
                             "since its sensors were ready (pre_event_filled_s_at_start): full in a full run's "
                             "unconstrained recording, a few seconds with --quick, so peak RSS is lower there")
    out["log"] = out["process"].get("log")
    out["verify"] = guarded("bodycam verify", lambda: verify(data))
    log.info("encoding %d frames at %dx%d in-process", ENCODER_FRAMES, WIDTH, HEIGHT)
    out["encoder"] = guarded("encoder cost", lambda: encoder_cost(ENCODER_FRAMES))
    cpu = out["process"].get("cpu", {}).get("cpu_s_per_footage_s")
    enc = out["encoder"].get("encode_cpu_s_per_footage_s")
    render = out["encoder"].get("sim_render_cpu_s_per_footage_s")
    if cpu is not None and enc is not None and render is not None:
        out["encoder_cpu_share"] = {
            "agent_cpu_s_per_footage_s": cpu,
            "video_encode_cpu_s_per_footage_s": enc,
            "share_of_agent_cpu": ratio(enc, cpu),
            "agent_without_video_encode": round(cpu - enc, 3),
            "sim_camera_render_cpu_s_per_footage_s": render,
            "agent_without_video_encode_and_sim_render": round(cpu - enc - render, 3),
            "what": "video encode (and the simulated camera's rendering, which a real sensor does not cost) "
            "measured in-process over the same frames, subtracted from the agent's CPU per second of footage",
        }
    return out
