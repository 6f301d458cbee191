"""A disk filled suddenly by something else while the real agent records (issue 11, cases 3 and 9).

The test mounts a small file system of its own (root only), fills it like ``dd`` would, and checks
what the README promises: the gap is explained by signed events, ``ctl stop`` and SIGTERM stay
prompt, a restart on the full disk comes up and reports it, and the chain verifies once freed.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agent.dirlock import LOCK_NAME
from agent.reserve import RESERVE_NAME
from tests.integration.agent_util import AgentProcess, provision_sim, run_cli, verify_json
from tests.integration.diskfill import (
    fill,
    free,
    last_entry,
    manifests,
    mount_problem,
    sealed_digests,
    small_fs,
    wait_reserve_full,
    wait_status,
)

MOUNT_PROBLEM = mount_problem()
needs_mount = pytest.mark.skipif(MOUNT_PROBLEM is not None, reason=MOUNT_PROBLEM or "")


def _wait_sealed(agent: AgentProcess, n: int) -> None:
    for _ in range(200):
        if agent.ctl("status")["data"]["segments_sealed"] >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"fewer than {n} segments sealed:\n{agent.log()}")


@needs_mount
def test_disk_filled_while_recording_keeps_the_chain_explained(tmp_path: Path) -> None:
    with small_fs(tmp_path / "fs") as mnt:
        data = mnt / "unit"
        cfg = provision_sim(data, pre_event_s=2.0, segment_s=2.0)
        logs = [tmp_path / f"agent-{i}.log" for i in range(3)]  # not on the disk being filled
        agent = AgentProcess(data, cfg, log_path=logs[0])
        agents = [agent]
        try:
            agent.wait_ready()
            assert agent.ctl("start")["ok"]
            _wait_sealed(agent, 1)
            before = sealed_digests(data)
            fill(mnt)
            wait_status(agent, "storage_level", "exhausted")
            stopped = agent.ctl("stop")  # answered, never a timeout: storage already stopped it
            assert stopped["ok"] or stopped["error"]["code"] == "refused", stopped
            status = agent.ctl("status")["data"]
            assert status["state"] == "ready"
            refused = agent.ctl("start")
            assert not refused["ok"] and "storage exhausted" in refused["error"]["message"]

            # space comes back: the level follows it up, the reserve is filled again, recording works
            free(mnt)
            wait_status(agent, "storage_level", "ok")
            wait_reserve_full(agent)
            assert agent.ctl("start")["ok"]
            _wait_sealed(agent, status["segments_sealed"] + 1)

            # full again, then a stop while full: prompt, clean, with a signed shutdown event
            fill(mnt)
            wait_status(agent, "storage_level", "exhausted")
            agent.terminate()
            assert agent.wait(30) == 0, agent.log()
            last = last_entry(data)
            assert last is not None and last.get("event") == "shutdown", last

            # a restart while still full comes up on the reserve and reports the full disk
            agent = AgentProcess(data, cfg, log_path=logs[1])
            agents.append(agent)
            agent.wait_ready()
            assert agent.ctl("status")["data"]["storage_level"] == "exhausted"
            agent.terminate()
            assert agent.wait(30) == 0, agent.log()
        finally:
            for a in agents:
                a.kill()
            free(mnt)
        after = sealed_digests(data)
        assert all(after.get(name) == digest for name, digest in before.items())  # nothing sealed changed
        doc = verify_json(data, "--hq-key", str(data / "dev-hq" / "hq.key"))
        assert doc["_exit"] == 0 and doc["ok"], doc.get("problems")
        events = [m.get("event") for m in manifests(data)]
        assert "storage-full" in events and "storage-ok" in events
    for log in logs[:2]:
        assert "Traceback" not in log.read_text(errors="replace"), log.read_text(errors="replace")


@needs_mount
def test_start_on_a_full_disk_without_a_reserve_is_one_line_and_exit_2(tmp_path: Path) -> None:
    with small_fs(tmp_path / "fs", 64 << 20) as mnt:
        data = mnt / "unit"
        cfg = provision_sim(data)
        (data / RESERVE_NAME).unlink(missing_ok=True)  # a unit from before the reserve, or one that spent it
        fill(mnt)
        listing = _listing(data)
        out = run_cli("run", "--sim", "--data-dir", str(data), "--config", str(cfg), "--duration", "1")
        assert out.returncode == 2, out.stderr
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and "is full" in lines[0] and "free space" in lines[0], out.stderr
        assert "Traceback" not in out.stderr
        assert _listing(data) == listing  # nothing left behind
        free(mnt)


def _listing(data: Path) -> list[Path]:
    """What is in the data dir, but the lock file, which every start uses and leaves (agent.dirlock)."""
    return sorted(p.relative_to(data) for p in data.rglob("*") if p.name != LOCK_NAME)
