"""Issue 11: the unit's guarantees under operator mistakes, through the real agent process.

A second agent on one data dir, a deleted identity, a read-only file system at start.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.control import request
from tests.integration.agent_util import BIN, AgentProcess, provision_sim, run_cli, verify_json
from tests.integration.doublestart import run_double_start
from tests.integration.hq_util import HqProcess, hq_keygen
from tests.integration.killharness import chain_manifests, sealed_digests


def _run(data: Path, *extra: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    cmd = [str(BIN / "bodycam"), "run", "--data-dir", str(data), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)


def _events(data: Path) -> list[str]:
    return [str(m["event"]) for m in chain_manifests(data) if m["type"] == "event"]


def test_a_second_agent_on_the_same_data_dir_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    data = tmp_path / "unit"
    config = provision_sim(data, pre_event_s=0.0, segment_s=2)
    first = AgentProcess(data, config)
    first.wait_ready()
    assert first.ctl("start")["ok"]
    sock_inode = os.stat(data / "ctl.sock").st_ino

    second = _run(data, "--sim", "--config", str(config), "--duration", "5", timeout_s=30)

    assert second.returncode == 2
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr
    assert f"in use by pid {first.proc.pid}" in lines[0]
    assert "Traceback" not in second.stderr
    # the first agent keeps its socket and its chain: the second touched neither
    assert os.stat(data / "ctl.sock").st_ino == sock_inode
    assert request(data / "ctl.sock", "status")["ok"]
    assert first.ctl("mark", note="after the refused start")["ok"]
    before = sealed_digests(data)
    assert first.ctl("stop")["ok"]
    first.terminate()
    assert first.wait() == 0, first.log()[-3000:]
    after = sealed_digests(data)
    assert all(after[name] == digest for name, digest in before.items())  # nothing sealed was rewritten
    doc = verify_json(data)
    assert doc["_exit"] == 0, doc["problems"]
    events = _events(data)
    assert "recovered-after-power-loss" not in events
    assert events.count("boot") == 1


def test_provision_is_refused_while_an_agent_runs(tmp_path: Path) -> None:
    data = tmp_path / "unit"
    config = provision_sim(data, pre_event_s=0.0)
    agent = AgentProcess(data, config)
    agent.wait_ready()
    key = (data / "device.key").read_bytes()
    out = run_cli("provision", "--data-dir", str(data), "--device-id", "x", "--hq-pub", str(data / "hq.pub"),
                  "--force")
    assert out.returncode == 1
    assert f"in use by pid {agent.proc.pid}" in out.stderr
    assert (data / "device.key").read_bytes() == key
    agent.terminate()
    assert agent.wait() == 0


@pytest.mark.parametrize("sim", [True, False], ids=["sim", "real"])
def test_a_deleted_identity_is_never_replaced(tmp_path: Path, sim: bool) -> None:
    data = tmp_path / "unit"
    config = provision_sim(data, pre_event_s=0.0)
    agent = AgentProcess(data, config, duration_s=2)
    assert agent.wait() == 0, agent.log()[-3000:]
    pub = (data / "device.pub").read_bytes()
    files = sorted(p.name for p in data.rglob("*"))
    (data / "device.key").unlink()

    out = _run(data, *(["--sim"] if sim else []), "--config", str(config), "--duration", "2")

    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "device.key is missing" in out.stderr
    assert "not provisioned" not in out.stderr
    assert "restore" in out.stderr
    assert not (data / "device.key").exists()
    assert (data / "device.pub").read_bytes() == pub
    assert sorted(p.name for p in data.rglob("*")) == [f for f in files if f != "device.key"]
    assert verify_json(data)["_exit"] == 0  # the evidence still verifies with the key beside it


def test_a_replaced_identity_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "unit"
    config = provision_sim(data, pre_event_s=0.0)
    assert AgentProcess(data, config, duration_s=1).wait() == 0
    other = tmp_path / "other"
    provision_sim(other)
    shutil.copy(other / "device.key", data / "device.key")
    shutil.copy(other / "device.pub", data / "device.pub")
    before = sealed_digests(data)

    out = _run(data, "--sim", "--config", str(config), "--duration", "2")

    assert out.returncode == 2
    assert "did not sign this data dir's evidence" in out.stderr
    assert sealed_digests(data) == before


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 32 MiB tmpfs the test mounts itself (root only), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a file system for the test needs root")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m,mode=0700", "tmpfs", str(mnt)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_read_only_file_system_at_start_is_one_line_and_leaves_nothing(small_fs: Path) -> None:
    data = small_fs / "unit"
    config = provision_sim(data, pre_event_s=0.0)
    assert AgentProcess(data, config, duration_s=1).wait() == 0
    fresh = small_fs / "fresh"
    listing = sorted(str(p) for p in small_fs.rglob("*"))
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)

    for argv in (["--sim", "--config", str(config)], ["--sim"]):
        target = data if "--config" in argv else fresh
        out = _run(target, *argv, "--duration", "2")
        assert out.returncode == 2
        assert "Traceback" not in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert "read-only file system" in out.stderr
        assert "remount" in out.stderr
    prov = run_cli("provision", "--data-dir", str(fresh), "--device-id", "x", "--hq-pub", str(data / "hq.pub"))
    assert prov.returncode == 1 and "read-only file system" in prov.stderr and "Traceback" not in prov.stderr
    subprocess.run(["mount", "-o", "remount,rw", str(small_fs)], check=True)
    assert sorted(str(p) for p in small_fs.rglob("*")) == listing


def test_headquarters_commands_share_its_data_dir_with_one_service_only(tmp_path: Path) -> None:
    hq = tmp_path / "hq"
    hq_keygen(hq)
    server = HqProcess(hq)
    try:
        second = run_cli("hq", "serve", "--data-dir", str(hq), "--listen", "127.0.0.1:0")
        assert second.returncode == 2
        assert f"in use by pid {server.proc.pid} (bodycam-hq serve)" in second.stderr
        keys = hq / "keys"
        before = {p.name: p.read_bytes() for p in keys.iterdir()}
        regen = run_cli("hq", "keygen", "--data-dir", str(hq), "--force")
        assert regen.returncode == 2 and f"pid {server.proc.pid}" in regen.stderr
        assert {p.name: p.read_bytes() for p in keys.iterdir()} == before
        unit = tmp_path / "unit"
        provision_sim(unit)
        enrolled = run_cli("hq", "enroll", "--data-dir", str(hq), "--device-id", "u-1",
                           "--device-pub", str(unit / "device.pub"))
        assert enrolled.returncode == 0, enrolled.stderr  # adding rows beside the running service is fine
    finally:
        server.stop()
    assert server.proc.returncode == 0


def test_second_starts_racing_a_recording_are_all_refused(tmp_path: Path) -> None:
    result = run_double_start(tmp_path / "unit", trials=3, seed=20261202, max_wait_s=2.0)
    fig = result.figures()
    assert fig["second_agents_refused"] == 3, result.trials
    assert fig["refusals_naming_the_holder"] == 3
    assert fig["sealed_lost_or_rewritten"] == 0
    assert fig["spurious_power_loss_events"] == 0
    assert fig["final_verify_ok"], fig["final_verify_problems"]
