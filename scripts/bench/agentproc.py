"""Driving a real ``bodycam run`` process for a bench: its config, its start, a timed recording, its evidence."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.config import SENSOR_SECTIONS, Config, load_config, render_config
from agent.control import request
from agent.daemon import ensure_dev_provisioned
from agent.evidence.format import PARTIAL_SUFFIX, SEGMENT_SUFFIX
from agent.evidence.manifest import ManifestError, parse_manifest_record
from agent.evidence.segment import scan
from agent.provision import CONFIG_NAME
from drivers.registry import DriverError, load_all

from .common import (
    BenchError,
    Result,
    footage_s,
    log_findings,
    proc_stat_cpu_s,
    proc_status_kib,
    ratio,
    sum_tracks,
)

log = logging.getLogger("bench.agent")

BIN = Path(sys.executable).parent
SENSOR_KINDS = {"thermal": "thermal", "microphone": "microphone", "gnss": "gnss", "inputs": "inputs",
                "indicators": "indicators", "power": "power"}
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 90.0
POLL_S = 0.002


def bodycam(*args: str) -> list[str]:
    return [str(BIN / "bodycam"), *args]


def without_missing_drivers(config: Config, sim: bool) -> tuple[Config, list[str]]:
    """Disable the sensor sections whose driver is not registered (the agent refuses to start otherwise)."""
    registry = load_all()
    changes: dict[str, Any] = {}
    disabled: list[str] = []
    for section in SENSOR_SECTIONS:
        sc = getattr(config, section)
        if not sc.enabled:
            continue
        driver = "sim" if sim else sc.driver
        try:
            registry.get(SENSOR_KINDS[section], driver)
        except DriverError:
            changes[section] = dataclasses.replace(sc, enabled=False)
            disabled.append(f"{section} (no {SENSOR_KINDS[section]} driver {driver!r})")
    return dataclasses.replace(config, **changes), disabled


def require_driver(kind: str, name: str) -> None:
    try:
        load_all().get(kind, name)
    except DriverError as exc:
        raise BenchError(str(exc)) from None


def prepare(data_dir: Path, sim: bool, adjust: Callable[[Config], Config]) -> tuple[Path, Result]:
    """Provision a development unit in ``data_dir`` and write the bench's config beside its own."""
    ensure_dev_provisioned(data_dir, "bench-unit")
    config, disabled = without_missing_drivers(adjust(load_config(data_dir / CONFIG_NAME)), sim)
    path = data_dir / "bench.toml"
    path.write_text(render_config(config))
    described = {
        "cameras": {n: {"driver": c.driver, "options": dict(c.options)}
                    for n, c in config.cameras.items() if c.enabled},
        "enabled": [s for s in SENSOR_SECTIONS if getattr(config, s).enabled],
        "disabled_for_missing_driver": disabled,
        "pre_event_s": config.recording.pre_event_s,
        "pre_event_audio": config.recording.pre_event_audio,
        "video_bitrate_bps": config.recording.video_bitrate_bps,
        "segment_s": config.evidence.segment_s,
        "chunk_bytes": config.evidence.chunk_bytes,
    }
    return path, described


class PartWatcher:
    """Polls the segments folder for the first open segment (``.part``), and for its first bytes on disk."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._stop = threading.Event()
        self.t0: float | None = None
        self.created_at: float | None = None
        self.bytes_at: float | None = None
        self._thread = threading.Thread(target=self._run, name="part-watcher", daemon=True)

    def start(self, t0: float) -> None:
        self.t0 = t0
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def wait(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)
        self.stop()

    def _run(self) -> None:
        while not self._stop.is_set() and self.bytes_at is None:
            try:
                with os.scandir(self._folder) as it:
                    for entry in it:
                        if not entry.name.endswith(PARTIAL_SUFFIX):
                            continue
                        now = time.monotonic()
                        if self.created_at is None:
                            self.created_at = now
                        if entry.stat().st_size > 0:
                            self.bytes_at = now
                            break
            except FileNotFoundError:
                pass
            time.sleep(POLL_S)

    def since_t0(self, at: float | None) -> float | None:
        return None if at is None or self.t0 is None else round(at - self.t0, 3)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def thread_cpu_s(pid: int) -> dict[int, float]:
    """CPU seconds of each thread of ``pid``."""
    out: dict[int, float] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        text = _read(Path(f"/proc/{pid}/task/{tid}/stat"))
        if text is not None:
            out[int(tid)] = proc_stat_cpu_s(text)
    return out


def manifests(data_dir: Path) -> list[dict[str, Any]]:
    """Every sealed chain entry's manifest in ``data_dir/segments``, in file order."""
    out: list[dict[str, Any]] = []
    for path in sorted((data_dir / "segments").glob(f"*{SEGMENT_SUFFIX}")):
        with path.open("rb") as fh:
            found = scan(fh)
        if found.manifest_record is None:
            continue
        try:
            out.append(parse_manifest_record(found.manifest_record).manifest)
        except ManifestError as exc:
            log.warning("%s: %s", path.name, exc)
    return out


def verify(data_dir: Path) -> Result:
    done = subprocess.run(bodycam("verify", str(data_dir), "--json"), capture_output=True, text=True, timeout=600,
                          check=False)
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        return {"passed": False, "exit_code": done.returncode, "error": done.stderr.strip()[-500:]}
    return {
        "passed": done.returncode == 0 and bool(report.get("ok")),
        "exit_code": done.returncode,
        "segments": report.get("segments"),
        "events": report.get("events"),
        "footage_s": report.get("footage_s"),
        "clean_end": report.get("clean_end"),
        "problems": report.get("problems", [])[:5],
        "warnings": len(report.get("warnings", [])),
    }


@dataclass
class Recording:
    """How long to record, and when to stop early (a predicate over the agent's status data)."""

    record_s: float
    done: Callable[[dict[str, Any]], bool] | None = None
    settle_s: float = 2.0  # after the tracks first deliver, so the start is not timed against warm-up
    restart_in_process: bool = True  # then time a second start over the socket (needs live sensors)


@dataclass(frozen=True, slots=True)
class _Sample:
    t: float
    cpu: float
    threads: dict[int, float]


LATENCY_WHAT = {
    "ctl_start_reply_s": "spawning 'bodycam ctl start' until it exits with the agent's reply: includes the "
    "ctl client's Python start-up",
    "ctl_status_reply_s": "the same client doing a status request (median of 3): mostly its start-up cost",
    "start_minus_status_s": "rough estimate of the agent's own work on start (the client's start-up varies by "
    "tens of ms or more on a busy machine, so small or negative values mean 'lost in the noise')",
    "status_round_trip_in_process_s": "one status request over the socket from this process: the socket's "
    "own round trip",
    "first_part_file_s": "from spawning ctl start until the open segment file (*.part) exists",
    "first_segment_bytes_s": "until that file has bytes on disk: the first checkpoint (due flush_interval_s "
    "after the segment's start, which pre-event footage puts in the past, so it comes at the recorder's next "
    "tick) or a full 256 KiB file buffer, whichever is first",
}


class AgentRun:
    """One ``bodycam run`` process from spawn to exit, and what was measured on the way."""

    def __init__(self, data_dir: Path, config: Path, sim: bool, cpus: frozenset[int] | None = None) -> None:
        self.data_dir = data_dir
        self.cpus = cpus  # None: wherever the scheduler likes; else the only CPUs the agent may run on
        self.config = config
        self.sim = sim
        self.socket = data_dir / "ctl.sock"
        self.log_path = data_dir / "agent.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.rusage: Any = None

    def status(self) -> dict[str, Any]:
        reply = request(self.socket, "status")
        if not reply.get("ok"):
            raise BenchError(f"status refused: {reply.get('error')}")
        data: dict[str, Any] = reply["data"]
        return data

    def _reap(self) -> bool:
        """Collect the exit status and resource usage if the agent has exited (Popen.poll would lose the usage)."""
        if self.proc is None or self.proc.returncode is not None:
            return True
        pid, status, rusage = os.wait4(self.proc.pid, os.WNOHANG)
        if not pid:
            return False
        self.rusage = rusage
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        return True

    def _alive(self) -> bool:
        return self.proc is not None and not self._reap()

    def _log_tail(self) -> str:
        text = _read(self.log_path) or ""
        return " | ".join(text.strip().splitlines()[-5:])

    def spawn(self, max_s: float) -> None:
        argv = bodycam("run", "--data-dir", str(self.data_dir), "--config", str(self.config), "--duration", str(max_s))
        if self.sim:
            argv.append("--sim")
        log.info("starting agent: %s", " ".join(argv))
        # A child inherits the affinity of the thread that forks it: pin this thread around the spawn, so the
        # agent is confined from its first instruction (no window in which its threads start elsewhere).
        saved = os.sched_getaffinity(0)
        if self.cpus is not None:
            os.sched_setaffinity(0, self.cpus)
        try:
            with self.log_path.open("wb") as logf:
                self.proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        finally:
            os.sched_setaffinity(0, saved)

    def wait_ready(self, media_tracks: int) -> dict[str, Any]:
        """Wait for the control socket and for every media track to have delivered frames."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if not self._alive():
                raise BenchError(f"agent exited with {self.proc.returncode if self.proc else '?'}: {self._log_tail()}")
            if self.socket.exists():
                try:
                    st = self.status()
                except (OSError, ValueError):
                    st = None
                if st is not None and sum(1 for v in st["frames"].values() if v > 0) >= media_tracks:
                    return st
            time.sleep(0.1)
        raise BenchError(f"agent not ready within {READY_TIMEOUT_S:.0f} s: {self._log_tail()}")

    def _start_in_process(self) -> Result:
        """A second, short recording started over the socket from this process: the agent's own latency,
        without the ctl client's start-up (closer to a hardware button, which posts the command directly)."""
        time.sleep(1.0)
        watcher = PartWatcher(self.data_dir / "segments")
        t_send = time.monotonic()
        watcher.start(t_send)
        reply = request(self.socket, "start")
        t_reply = time.monotonic()
        watcher.wait(15.0)
        time.sleep(1.0)
        stopped = request(self.socket, "stop")
        return {
            "start_reply_s": round(t_reply - t_send, 4),
            "first_part_file_s": watcher.since_t0(watcher.created_at),
            "first_segment_bytes_s": watcher.since_t0(watcher.bytes_at),
            "ok": bool(reply.get("ok")) and bool(stopped.get("ok")),
            "pre_event_s_in_reply": reply.get("data", {}).get("pre_event_s"),
            "what": "after the measured recording stopped: start requested with agent.control.request, timed to "
            "its reply and to the open segment's first bytes; then a 1 s recording is stopped (it is in the "
            "evidence, outside the frame counts above)",
        }

    def _timed_ctl_status(self) -> float:
        t = time.monotonic()
        subprocess.run(bodycam("ctl", "--data-dir", str(self.data_dir), "status"), capture_output=True, check=True)
        return time.monotonic() - t

    def cpu_s(self) -> float:
        assert self.proc is not None
        text = _read(Path(f"/proc/{self.proc.pid}/stat"))
        if text is None:
            raise BenchError("agent process vanished")
        return proc_stat_cpu_s(text)

    def memory_kib(self) -> dict[str, int | None]:
        assert self.proc is not None
        text = _read(Path(f"/proc/{self.proc.pid}/status")) or ""
        return {"vm_hwm_kib": proc_status_kib(text, "VmHWM"), "vm_rss_kib": proc_status_kib(text, "VmRSS")}

    def terminate(self) -> int | None:
        """SIGTERM (the agent seals and stops cleanly), then collect its exit status and resource usage."""
        if self.proc is None:
            return None
        if self._alive():
            self.proc.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._reap():
                return self.proc.returncode
            time.sleep(0.05)
        log.error("agent did not stop within %.0f s: killing it", STOP_TIMEOUT_S)
        self.proc.kill()
        self.proc.wait()
        return self.proc.returncode

    def _sample(self) -> _Sample:
        assert self.proc is not None
        return _Sample(time.monotonic(), self.cpu_s(), thread_cpu_s(self.proc.pid))

    def _start_via_ctl(self) -> tuple[Result, dict[str, Any]]:
        """``bodycam ctl start`` as a user would run it, timed to its reply and to the segment's first bytes."""
        ctl_status_s = statistics.median(self._timed_ctl_status() for _ in range(3))
        t = time.monotonic()
        self.status()
        in_process_s = time.monotonic() - t
        watcher = PartWatcher(self.data_dir / "segments")
        t_send = time.monotonic()
        watcher.start(t_send)
        started = subprocess.run(bodycam("ctl", "--data-dir", str(self.data_dir), "start", "--json"),
                                 capture_output=True, text=True, check=False)
        t_reply = time.monotonic()
        reply: dict[str, Any] = json.loads(started.stdout) if started.stdout.strip() else {}
        if started.returncode != 0 or not reply.get("ok"):
            watcher.stop()
            raise BenchError(f"ctl start failed ({started.returncode}): {started.stderr.strip() or reply}")
        watcher.wait(15.0)
        latency = {
            "ctl_start_reply_s": round(t_reply - t_send, 3),
            "ctl_status_reply_s": round(ctl_status_s, 3),
            "start_minus_status_s": round((t_reply - t_send) - ctl_status_s, 3),
            "status_round_trip_in_process_s": round(in_process_s, 4),
            "first_part_file_s": watcher.since_t0(watcher.created_at),
            "first_segment_bytes_s": watcher.since_t0(watcher.bytes_at),
            "pre_event_s_in_reply": reply.get("data", {}).get("pre_event_s"),
            "what": LATENCY_WHAT,
        }
        return latency, reply

    def record(self, plan: Recording, media_tracks: int) -> Result:
        """Start recording through ``bodycam ctl``, record, stop, and measure the agent meanwhile."""
        ready = self.wait_ready(media_tracks)
        time.sleep(plan.settle_s)
        buffered = self.status().get("pre_event") or {}
        at_start = self.memory_kib()
        before_start = self.cpu_s()
        latency, reply = self._start_via_ctl()
        first, st0 = self._sample(), self.status()
        deadline = first.t + plan.record_s
        while time.monotonic() < deadline:
            if not self._alive():
                raise BenchError(f"agent exited while recording: {self._log_tail()}")
            if plan.done is not None and plan.done(self.status()):
                break
            # a stop predicate is polled often: time past the end of the footage would dilute CPU per second
            time.sleep(min(0.1 if plan.done is not None else 0.5, max(0.0, deadline - time.monotonic())))
        last, st1 = self._sample(), self.status()
        stop_reply = request(self.socket, "stop")
        st2 = self.status()
        if plan.restart_in_process:
            latency["in_process_socket"] = self._start_in_process()
        peak_hwm = self.memory_kib()["vm_hwm_kib"]
        before_exit = self.cpu_s()
        code = self.terminate()
        sensors = st2.get("sensors", {})
        return {
            "latency": latency,
            "cpu": self._cpu_figures(first, last, before_start, before_exit),
            "memory": {
                "peak_rss_kib": peak_hwm,
                "peak_rss_mib": _mib(peak_hwm),
                "ru_maxrss_kib": self.rusage.ru_maxrss if self.rusage else None,
                "what": "VmHWM from /proc/PID/status after the recording stopped; ru_maxrss from wait4 at exit",
                "rss_before_start_mib": _mib(at_start["vm_rss_kib"]),
                "pre_event_before_start": {
                    "configured_s": buffered.get("configured_s"), "buffered_s": buffered.get("buffered_s"),
                    "buffered_mib": _mib((buffered.get("buffered_bytes") or 0) // 1024 or None),
                    "buffered_packets": buffered.get("buffered_packets"),
                    "what": "the pre-event buffer as the agent reported it just before the recording started "
                            "(its footage span and encoded bytes) and the agent's resident memory then (VmRSS)",
                },
            },
            "exit_code": code,
            "stop_reply_ok": bool(stop_reply.get("ok")),
            "frames": frame_accounting(st0, st1, st2, self.data_dir, reply.get("data", {}).get("recording_id")),
            "last_error": st2.get("last_error"),
            "ready_status_sensors": {k: v.get("state") for k, v in ready.get("sensors", {}).items()},
            "sensor_restarts": {k: v.get("restarts") for k, v in sensors.items()},
            "sensor_errors": {k: v["last_error"] for k, v in sensors.items() if v.get("last_error")},
        }

    def _cpu_figures(self, first: _Sample, last: _Sample, before_start: float, before_exit: float) -> Result:
        window = last.t - first.t
        per_thread = sorted(
            (round((cpu - first.threads.get(tid, 0.0)) / window, 3) for tid, cpu in last.threads.items()),
            reverse=True,
        )
        return {
            "recording_window_s": round(window, 2),
            "cpu_s": round(last.cpu - first.cpu, 2),
            "cpu_s_per_footage_s": round((last.cpu - first.cpu) / window, 3),
            "busiest_threads_cpu_s_per_s": per_thread[:6],
            "whole_life_cpu_s": round(self.rusage.ru_utime + self.rusage.ru_stime, 2) if self.rusage else None,
            "cpu_s_before_start": round(before_start, 2),
            "cpu_s_at_stop": round(before_exit, 2),
            "what": "agent utime+stime from /proc/PID/stat between the start reply and the stop request, per "
            "wall second of recording (the agent captures and encodes in real time, so a wall second is a "
            "second of footage); threads are unnamed in /proc on Python 3.11, listed busiest first",
        }

    def findings(self) -> Result:
        text = _read(self.log_path) or ""
        return log_findings(text.splitlines())


def frame_accounting(
    st_start: dict[str, Any], st_end: dict[str, Any], st_stopped: dict[str, Any], data_dir: Path,
    recording_id: str | None,
) -> Result:
    """Per track: frames the agent took from its sensors, frames the segments hold, and drops on either side."""
    found = [m for m in manifests(data_dir) if m.get("recording_id") == recording_id]
    stored = sum_tracks(found)
    out: Result = {
        "recording_id": recording_id,
        "segments": sum(1 for m in found if m.get("type") == "segment"),
        "footage_s_in_manifests": footage_s(found),
        "what": {
            "captured_total": "frames (audio: samples) the recorder received from the encoders since boot, "
            "at the stop",
            "captured_while_recording": "the same between the start reply and the stop request",
            "stored": "sum of tracks[].frames over this recording's segment manifests: includes the "
            "pre-event footage, so it can exceed captured_while_recording",
            "dropped_status": "frames the agent counted as dropped (ctl status) since boot",
            "dropped_stored": "sum of tracks[].dropped over the manifests",
            "driver_delivered/driver_dropped": "the sensor driver's own counts",
        },
        "tracks": {},
    }
    sensors = st_stopped.get("sensors", {})
    for track, total in st_stopped.get("frames", {}).items():
        device = sensors.get(track, {}).get("device", {})
        while_rec = st_end["frames"].get(track, 0) - st_start["frames"].get(track, 0)
        s = stored.get(track, {"frames": 0, "dropped": 0})
        out["tracks"][track] = {
            "captured_total": total,
            "captured_while_recording": while_rec,
            "stored": s["frames"],
            "stored_vs_captured_while_recording": ratio(s["frames"], while_rec),
            "dropped_status": st_stopped.get("dropped", {}).get(track),
            "dropped_stored": s["dropped"],
            "driver_delivered": device.get("delivered"),
            "driver_dropped": device.get("dropped"),
            "driver_achieved_rate_hz": device.get("achieved_rate_hz"),
        }
    out["dropped_total"] = sum(t["dropped_status"] or 0 for t in out["tracks"].values())
    out["dropped_goal"] = 0
    return out


def _mib(kib: int | None) -> float | None:
    return round(kib / 1024, 1) if kib else None
