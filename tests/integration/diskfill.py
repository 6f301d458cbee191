"""The full-disk harness: a small file system of its own, filled by "something else" while the real
agent records, then freed; checks that nothing sealed changed and every gap is explained.

Used by the test suite (one trial) and by ``make faults`` (many trials, JSON figures). Needs root
to mount a size-limited tmpfs; :func:`mount_problem` says why not when it cannot.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.integration.agent_util import AgentProcess, provision_sim, verify_json
from tests.integration.killharness import chain_manifests as manifests
from tests.integration.killharness import sealed_digests

FS_BYTES = 192 << 20  # room above the test config's thresholds (warn at 64 MiB + hysteresis)
FILLER = "filler.bin"
UNEXPLAINED = "with no event explaining it"


def mount_problem() -> str | None:
    """Why a small file system cannot be mounted here (None when it can)."""
    if os.geteuid() != 0:
        return "mounting a small file system needs root"
    with tempfile.TemporaryDirectory(prefix="bodycam-mnt-") as tmp:
        out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", tmp], capture_output=True, text=True)
        if out.returncode != 0:
            return f"mount -t tmpfs is not permitted here: {out.stderr.strip()}"
        subprocess.run(["umount", tmp], check=True)
    return None


@contextlib.contextmanager
def small_fs(mount_point: Path, size_bytes: int = FS_BYTES) -> Iterator[Path]:
    """A tmpfs of ``size_bytes`` mounted at ``mount_point`` for the block; unmounted after it."""
    mount_point.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes},mode=0700", "tmpfs", str(mount_point)],
                   check=True, capture_output=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False, capture_output=True)


def fill(mount_point: Path) -> int:
    """Write a filler file until the file system refuses (ENOSPC), as ``dd`` would; return its size."""
    fd = os.open(mount_point / FILLER, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    written = 0
    try:
        for chunk in (1 << 20, 4096, 512):
            block = b"\0" * chunk
            while True:
                try:
                    n = os.write(fd, block)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    break
                written += n
                if n < chunk:
                    break
    finally:
        os.close(fd)
    return written


def free(mount_point: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (mount_point / FILLER).unlink()


def last_entry(data: Path) -> dict[str, Any] | None:
    """The manifest of the newest sealed entry in the data dir."""
    found = manifests(data)
    return found[-1] if found else None


def wait_status(agent: AgentProcess, key: str, want: str, timeout_s: float = 20.0) -> float:
    """Poll ``status`` until ``data[key] == want``; return the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if agent.ctl("status")["data"][key] == want:
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"status {key} never became {want!r} in {timeout_s} s:\n{agent.log()}")


def wait_reserve_full(agent: AgentProcess, timeout_s: float = 20.0) -> None:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        reserve = agent.ctl("status")["data"]["storage"].get("reserve") or {}
        if reserve.get("held_bytes") == reserve.get("size_bytes"):
            return
        time.sleep(0.05)
    raise AssertionError(f"the space reserve was not filled again in {timeout_s} s:\n{agent.log()}")


@dataclass
class DiskTrial:
    index: int
    recorded_s: float
    full_s: float
    sealed_before: int
    sealed_lost_or_rewritten: int
    level_exhausted_after_s: float
    stop_answer_s: float
    level_ok_after_free_s: float
    restarted_full: bool


@dataclass
class DiskResult:
    trials: list[DiskTrial] = field(default_factory=list)
    final_verify: dict[str, Any] = field(default_factory=dict)
    tracebacks: int = 0

    def figures(self) -> dict[str, Any]:
        def spread(values: list[float]) -> dict[str, float | None]:
            return {"median": round(statistics.median(values), 3) if values else None,
                    "max": round(max(values), 3) if values else None}

        problems = self.final_verify.get("problems", [])
        return {
            "trials": len(self.trials),
            "segments_sealed_before_fills": sum(t.sealed_before for t in self.trials),
            "sealed_lost_or_rewritten": sum(t.sealed_lost_or_rewritten for t in self.trials),
            "unexplained_gaps": sum(UNEXPLAINED in str(p) for p in problems),
            "restarts_on_full_disk": sum(t.restarted_full for t in self.trials),
            "level_exhausted_after_fill_s": spread([t.level_exhausted_after_s for t in self.trials]),
            "ctl_stop_answer_s": spread([t.stop_answer_s for t in self.trials]),
            "level_ok_after_free_s": spread([t.level_ok_after_free_s for t in self.trials]),
            "agent_tracebacks": self.tracebacks,
            "final_verify_ok": bool(self.final_verify.get("ok")),
            "final_verify_problems": problems,
        }


def run_disk_harness(work: Path, trials: int, seed: int, min_s: float = 1.0, max_s: float = 5.0) -> DiskResult:
    """``trials`` times: record, fill the disk at a random moment, check the unit, free it, go on.
    Every other trial the agent is stopped and restarted while the disk is full."""
    rng = random.Random(seed)
    result = DiskResult()
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with small_fs(work / "fs") as mnt:
        data = mnt / "unit"
        cfg = provision_sim(data, pre_event_s=2.0, segment_s=2.0)
        agents: list[AgentProcess] = []

        def start_agent() -> AgentProcess:
            agent = AgentProcess(data, cfg, log_path=logs / f"agent-{len(agents)}.log")
            agents.append(agent)
            agent.wait_ready()
            return agent

        try:
            agent = start_agent()
            for i in range(trials):
                agent = _trial(i, rng, mnt, data, agent, start_agent, result, min_s, max_s)
            agent.terminate()
            assert agent.wait(60) == 0, agent.log()
        finally:
            for a in agents:
                a.kill()
            free(mnt)
        result.tracebacks = sum(a.log_path.read_text(errors="replace").count("Traceback") for a in agents)
        result.final_verify = verify_json(data, "--hq-key", str(data / "dev-hq" / "hq.key"))
    return result


def _trial(i: int, rng: random.Random, mnt: Path, data: Path, agent: AgentProcess,
           start_agent: Any, result: DiskResult, min_s: float, max_s: float) -> AgentProcess:
    reply = agent.ctl("start")
    assert reply["ok"], reply
    record_s = rng.uniform(min_s, max_s)
    time.sleep(record_s)
    before = sealed_digests(data)
    fill(mnt)
    filled = time.monotonic()
    exhausted_s = wait_status(agent, "storage_level", "exhausted")
    asked = time.monotonic()
    agent.ctl("stop")  # refused (storage already stopped the recording) or done: either way answered
    stop_s = time.monotonic() - asked
    restarted = i % 2 == 1
    if restarted:
        agent.terminate()
        assert agent.wait(60) == 0, agent.log()
        agent = start_agent()  # on the full disk: it must come up, on its reserve
        wait_status(agent, "storage_level", "exhausted")
    time.sleep(rng.uniform(0.5, 2.0))
    full_s = time.monotonic() - filled
    free(mnt)
    ok_s = wait_status(agent, "storage_level", "ok")
    wait_reserve_full(agent)
    after = sealed_digests(data)
    result.trials.append(DiskTrial(
        index=i,
        recorded_s=round(record_s, 3),
        full_s=round(full_s, 3),
        sealed_before=len(before),
        sealed_lost_or_rewritten=sum(after.get(name) != digest for name, digest in before.items()),
        level_exhausted_after_s=round(exhausted_s, 3),
        stop_answer_s=round(stop_s, 3),
        level_ok_after_free_s=round(ok_s, 3),
        restarted_full=restarted,
    ))
    return agent
