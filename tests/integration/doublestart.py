"""The double-start harness: a second ``bodycam run`` on a recording unit's data dir, at random moments.

Each trial starts a second agent on the data dir of a running, recording one; it must be refused at
once (exit 2, naming the first one's PID) and the first must record on untouched. Used by the test
suite (a few trials) and by ``make faults`` (more trials, JSON figures).
"""

from __future__ import annotations

import random
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.integration.agent_util import BIN, AgentProcess, provision_sim, verify_json
from tests.integration.killharness import chain_manifests, sealed_digests


@dataclass
class RaceTrial:
    index: int
    waited_s: float
    exit_code: int
    refused_in_s: float
    named_holder: bool
    sealed_rewritten: int


@dataclass
class RaceResult:
    trials: list[RaceTrial] = field(default_factory=list)
    sealed_total: int = 0
    sealed_lost_or_rewritten: int = 0
    final_verify: dict[str, Any] = field(default_factory=dict)
    recovery_events: int = 0

    def figures(self) -> dict[str, Any]:
        return {
            "trials": len(self.trials),
            "second_agents_refused": sum(t.exit_code == 2 for t in self.trials),
            "refusals_naming_the_holder": sum(t.named_holder for t in self.trials),
            "refusal_time_s_max": max((t.refused_in_s for t in self.trials), default=None),
            "sealed_entries": self.sealed_total,
            "sealed_lost_or_rewritten": self.sealed_lost_or_rewritten,
            "spurious_power_loss_events": self.recovery_events,
            "final_verify_ok": bool(self.final_verify.get("ok")),
            "final_verify_problems": self.final_verify.get("problems", []),
        }


def run_double_start(data: Path, trials: int, seed: int, max_wait_s: float = 3.0) -> RaceResult:
    """``trials`` second starts while the first agent records; then a clean stop and a verify."""
    rng = random.Random(seed)
    cfg = provision_sim(data, pre_event_s=1.0, segment_s=2.0)
    result = RaceResult()
    first = AgentProcess(data, cfg)
    try:
        first.wait_ready()
        assert first.ctl("start")["ok"]
        seen: dict[str, str] = {}
        for i in range(trials):
            waited = rng.uniform(0.0, max_wait_s)
            time.sleep(waited)
            before = sealed_digests(data)
            started = time.monotonic()
            second = subprocess.run(
                [str(BIN / "bodycam"), "run", "--sim", "--data-dir", str(data), "--config", str(cfg)],
                capture_output=True, text=True, timeout=60,
            )
            refused_in = time.monotonic() - started
            after = sealed_digests(data)
            rewritten = sum(1 for name, digest in before.items() if after.get(name) != digest)
            seen.update(after)
            result.trials.append(RaceTrial(
                index=i,
                waited_s=round(waited, 3),
                exit_code=second.returncode,
                refused_in_s=round(refused_in, 3),
                named_holder=f"pid {first.proc.pid}" in second.stderr,
                sealed_rewritten=rewritten,
            ))
        assert first.ctl("stop")["ok"]
        first.terminate()
        assert first.wait(60) == 0, first.log()[-3000:]
        final = sealed_digests(data)
        result.sealed_total = len(final)
        result.sealed_lost_or_rewritten = sum(1 for name, digest in seen.items() if final.get(name) != digest)
        result.recovery_events = sum(
            1 for m in chain_manifests(data) if m["type"] == "event" and m["event"] == "recovered-after-power-loss"
        )
    finally:
        first.kill()
    result.final_verify = verify_json(data, "--hq-key", str(data / "dev-hq" / "hq.key"))
    return result
