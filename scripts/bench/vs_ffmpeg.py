"""vs_ffmpeg section: one 1080p30 clip recorded by the agent (replay drivers) and segmented by plain ffmpeg."""

from __future__ import annotations

import dataclasses
import logging
import resource
import shutil
import subprocess
import time
import types
from pathlib import Path
from typing import Any

from agent.config import Config, SensorConfig

from .agent_run import SCENE
from .agentproc import AgentRun, Recording, prepare, require_driver, verify
from .common import BenchError, Result, guarded, machine, ratio, require_tool, run_tool

log = logging.getLogger("bench.vs_ffmpeg")

WIDTH, HEIGHT, FPS = 1920, 1080, 30
GOAL = 1.0  # the agent adds sealing and muxing, and should win back its per-frame Python overhead


def make_clip(folder: Path, duration_s: int) -> tuple[Path, Path]:
    """The agent section's street scene (the sim camera's frames, piped raw) + a sine tone, H.264 (high quality,
    cheap to decode) and PCM in Matroska; the audio also as WAV."""
    from drivers.sim_camera import SimCamera
    from drivers.system_clock import SystemClock

    clip, wav = folder / "clip.mkv", folder / "clip.wav"
    cam = SimCamera(name="clip", clock=SystemClock(), width=WIDTH, height=HEIGHT, fps=FPS, **SCENE)
    argv = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{WIDTH}x{HEIGHT}", "-r", str(FPS), "-i", "pipe:0",
            "-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000",
            "-t", str(duration_s), "-c:v", "libx264", "-preset", "ultrafast", "-crf", "18", "-pix_fmt", "yuv420p",
            "-c:a", "pcm_s16le", str(clip)]
    log.info("running: %s", " ".join(argv))
    utc0_ns, period_ns = time.time_ns(), 1_000_000_000 // FPS
    with subprocess.Popen(argv, stdin=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdin is not None and proc.stderr is not None
        try:
            for i in range(duration_s * FPS):
                proc.stdin.write(cam.render(i, utc0_ns + i * period_ns).data)
            proc.stdin.close()
        except BrokenPipeError:
            pass  # ffmpeg stopped reading: its exit status and stderr say why
        err = proc.stderr.read().decode(errors="replace")
        code = proc.wait(timeout=60 * duration_s)
    if code != 0:
        raise BenchError(f"ffmpeg (making the clip) exited {code}: {' | '.join(err.strip().splitlines()[-3:])}")
    run_tool(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-i", str(clip),
              "-vn", "-c:a", "pcm_s16le", str(wav)], timeout_s=120)
    return clip, wav


def _children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def ffmpeg_segmenting(clip: Path, out_dir: Path, duration_s: int) -> Result:
    """(a) ffmpeg in real time (-re), x264 ultrafast/zerolatency + Opus, 10 s Matroska segments, no encryption."""
    out_dir.mkdir(parents=True, exist_ok=True)
    argv = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-re", "-i", str(clip),
            "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "30", "-b:v", "4M",
            "-c:a", "libopus", "-f", "segment", "-segment_time", "10", "out%03d.mkv"]
    cpu0, wall0 = _children_cpu_s(), time.monotonic()
    run_tool(argv, timeout_s=duration_s * 5 + 60, cwd=out_dir)
    cpu, wall = _children_cpu_s() - cpu0, time.monotonic() - wall0
    files = sorted(out_dir.glob("out*.mkv"))
    return {
        "command": " ".join(argv),
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "cpu_s_per_footage_s": round(cpu / duration_s, 3),
        "segments": len(files),
        "bytes": sum(p.stat().st_size for p in files),
        "what": "RUSAGE_CHILDREN before and after: ffmpeg's whole life (decode the clip, encode, mux), "
        "per second of the clip",
    }


def replay_config(clip: Path, wav: Path) -> Any:
    def adjust(config: Config) -> Config:
        # loop = false: the footage is the clip once, as ffmpeg sees it
        camera = SensorConfig(driver="replay", options=types.MappingProxyType({"path": str(clip), "loop": False}))
        mic = SensorConfig(driver="replay", options=types.MappingProxyType({"path": str(wav), "loop": False}))
        return dataclasses.replace(
            config,
            cameras=types.MappingProxyType({"chest": camera}),
            microphone=mic,
            thermal=dataclasses.replace(config.thermal, enabled=False),
            # the replay starts when the agent boots, before the start command: buffer audio too, so the
            # recording holds the whole clip, sound included
            recording=dataclasses.replace(config.recording, pre_event_audio=True),
        )

    return adjust


def agent_replaying(clip: Path, wav: Path, data: Path, duration_s: int) -> Result:
    """(b) the agent with the replay camera and microphone, recording the whole clip."""
    require_driver("camera", "replay")
    require_driver("microphone", "replay")
    cfg, described = prepare(data, sim=False, adjust=replay_config(clip, wav))
    agent = AgentRun(data, cfg, sim=False)
    clip_frames = duration_s * FPS

    def clip_done(status: dict[str, Any]) -> bool:
        device = status.get("sensors", {}).get("chest", {}).get("device", {})
        delivered = int(device.get("delivered") or 0) + int(device.get("dropped") or 0)
        return bool(device.get("ended")) or delivered >= clip_frames

    out: Result = {"config": described}
    try:
        agent.spawn(max_s=duration_s * 3 + 600)
        # The replay starts when the agent opens it; the pre-event buffer holds the seconds before the
        # start command, so stopping once the camera has delivered the whole clip records all of it.
        out.update(agent.record(Recording(duration_s + 10, done=clip_done, settle_s=0.0, restart_in_process=False), 2))
    finally:
        agent.terminate()
        out["log"] = agent.findings()
    out["verify"] = verify(data)
    return out


def run(quick: bool, workdir: Path) -> Result:
    duration_s = 10 if quick else 60
    for tool in ("ffmpeg",):
        require_tool(tool)
    folder = workdir / "vs-ffmpeg"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    log.info("making a %d s %dx%d@%d test clip", duration_s, WIDTH, HEIGHT, FPS)
    clip, wav = make_clip(folder, duration_s)
    out: Result = {
        "machine": machine(),
        "params": {"clip_s": duration_s, "width": WIDTH, "height": HEIGHT, "fps": FPS,
                   "clip": "the sim camera's street scene + 1 kHz sine, H.264 ultrafast crf 18 + PCM in Matroska",
                   "scene": SCENE,
                   "clip_bytes": clip.stat().st_size, "ffmpeg": _ffmpeg_version()},
        "goal_ratio": GOAL,
    }
    log.info("ffmpeg segmenting the clip in real time")
    out["ffmpeg"] = guarded("ffmpeg", lambda: ffmpeg_segmenting(clip, folder / "ffmpeg-out", duration_s))
    log.info("the agent recording the clip through the replay drivers")
    out["agent"] = guarded("agent with replay drivers", lambda: agent_replaying(clip, wav, folder / "agent-data",
                                                                               duration_s))
    agent_cpu = out["agent"].get("cpu", {}).get("cpu_s_per_footage_s")
    ffmpeg_cpu = out["ffmpeg"].get("cpu_s_per_footage_s")
    whole = out["agent"].get("cpu", {}).get("whole_life_cpu_s")
    out["ratio_agent_over_ffmpeg"] = ratio(agent_cpu, ffmpeg_cpu)
    out["goal"] = GOAL
    out["ratio_what"] = ("agent CPU per second while recording (steady state, /proc) over ffmpeg's CPU per "
                         "second of clip (whole process); both decode the same H.264 clip")
    out["ratio_whole_process"] = ratio(whole / duration_s if whole is not None else None, ffmpeg_cpu)
    out["ratio_whole_process_what"] = ("the agent's whole life (Python start-up, imports, idling before the "
                                       "start and after the clip ends, shutdown) per second of clip, over ffmpeg's")
    return out


def _ffmpeg_version() -> str:
    try:
        done = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BenchError(f"ffmpeg -version: {exc}") from exc
    return done.stdout.splitlines()[0] if done.stdout else "unknown"
