"""The power-cut harness: SIGKILL the real agent while it records, restart it, check the invariants.

Used by the test suite (a few trials) and by ``make faults`` (many trials, JSON figures).
"""

from __future__ import annotations

import hashlib
import random
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.evidence.manifest import parse_manifest_record
from agent.evidence.segment import scan
from agent.store import Store
from tests.fakes import FakeClock
from tests.integration.agent_util import AgentProcess, provision_sim, verify_json


@dataclass
class Trial:
    index: int
    recorded_s: float
    sealed_before: int
    sealed_lost: int
    lost_footage_s: float | None
    recovered_segments: int
    quarantined: int
    recovery_s: float
    integrity: str


@dataclass
class HarnessResult:
    trials: list[Trial] = field(default_factory=list)
    final_verify: dict[str, Any] = field(default_factory=dict)
    last_agent: AgentProcess | None = None

    def figures(self) -> dict[str, Any]:
        losses = [t.lost_footage_s for t in self.trials if t.lost_footage_s is not None]
        return {
            "trials": len(self.trials),
            "segments_sealed_before_kills": sum(t.sealed_before for t in self.trials),
            "segments_lost": sum(t.sealed_lost for t in self.trials),
            "segments_recovered": sum(t.recovered_segments for t in self.trials),
            "footage_lost_per_kill_s": {
                "median": round(statistics.median(losses), 3) if losses else None,
                "max": round(max(losses), 3) if losses else None,
            },
            "recovery_time_s": {
                "median": round(statistics.median(t.recovery_s for t in self.trials), 3) if self.trials else None,
                "max": round(max(t.recovery_s for t in self.trials), 3) if self.trials else None,
            },
            "integrity_ok": all(t.integrity == "ok" for t in self.trials),
            "final_verify_ok": bool(self.final_verify.get("ok")),
            "final_verify_problems": self.final_verify.get("problems", []),
        }


def sealed_digests(data: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (data / "segments").glob("*.bcs")}


def chain_manifests(data: Path) -> list[dict[str, Any]]:
    out = []
    for p in sorted((data / "segments").glob("*.bcs")):
        with p.open("rb") as fh:
            s = scan(fh)
        if s.manifest_record is not None:
            out.append(parse_manifest_record(s.manifest_record).manifest)
    return out


def run_harness(data: Path, trials: int, seed: int, min_s: float = 1.0, max_s: float = 6.0) -> HarnessResult:
    rng = random.Random(seed)
    cfg = provision_sim(data, pre_event_s=2.0, segment_s=2.0)
    result = HarnessResult()
    agent = AgentProcess(data, cfg)
    try:
        _trials(data, cfg, agent, result, trials, rng, min_s, max_s)
    finally:
        agent = result.last_agent or agent
        agent.kill()  # no-op when it already stopped cleanly; never left running after a failure
    result.final_verify = verify_json(data, "--hq-key", str(data / "dev-hq" / "hq.key"))
    return result


def _trials(
    data: Path,
    cfg: Path,
    agent: AgentProcess,
    result: HarnessResult,
    trials: int,
    rng: random.Random,
    min_s: float,
    max_s: float,
) -> None:
    agent.wait_ready()
    reply = agent.ctl("start")
    assert reply["ok"], reply
    for i in range(trials):
        record_s = rng.uniform(min_s, max_s)
        time.sleep(record_s)
        before = sealed_digests(data)
        kill_mono = time.monotonic_ns()
        agent.kill()
        started = time.monotonic()
        agent = AgentProcess(data, cfg)
        result.last_agent = agent
        agent.wait_ready()  # recovery has run before the control socket answers
        recovery_s = time.monotonic() - started
        after = sealed_digests(data)
        quarantined = len(list((data / "quarantine").glob("*"))) if (data / "quarantine").exists() else 0
        lost = [name for name, digest in before.items() if after.get(name) != digest]
        ms = chain_manifests(data)
        recovered = [m for m in ms if "recovered" in m["flags"] and f"{m['seq']:010d}.bcs" not in before]
        killed_boot_segments = [
            m for m in ms if m["type"] == "segment" and m["time"]["mono_end_ns"] <= kill_mono + 10**9
        ]
        last_end = max((m["time"]["mono_end_ns"] for m in killed_boot_segments), default=None)
        with Store(data / "index.sqlite", FakeClock()) as store:
            integrity = store.integrity_check()
        result.trials.append(
            Trial(
                index=i,
                recorded_s=round(record_s, 3),
                sealed_before=len(before),
                sealed_lost=len(lost),
                lost_footage_s=None if last_end is None else round(max(0, kill_mono - last_end) / 1e9, 3),
                recovered_segments=len(recovered),
                quarantined=quarantined - sum(t.quarantined for t in result.trials),
                recovery_s=round(recovery_s, 3),
                integrity=integrity,
            )
        )
    agent.terminate()
    assert agent.wait(60) == 0, agent.log()
