"""Running the real agent process on simulated sensors, as a unit would run it."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

from agent.config import SensorConfig, load_config, render_config
from agent.control import request
from agent.daemon import ensure_dev_provisioned

BIN = Path(sys.executable).parent


def provision_sim(data: Path, **recording: Any) -> Path:
    """A development unit in ``data`` with a test config; returns the config path."""
    ensure_dev_provisioned(data, "it-unit-1")
    cfg = load_config(data / "bodycam.toml")
    rec = dataclasses.replace(cfg.recording, **{k: v for k, v in recording.items() if k != "segment_s"})
    ev = dataclasses.replace(cfg.evidence, segment_s=recording.get("segment_s", cfg.evidence.segment_s))
    # small explicit thresholds: the tests must not depend on how full the machine's disk is
    storage = dataclasses.replace(
        cfg.storage,
        warn_free_bytes=64 << 20,
        critical_free_bytes=48 << 20,
        full_free_bytes=32 << 20,
        reserve_free_bytes=16 << 20,
    )
    cfg = dataclasses.replace(cfg, recording=rec, evidence=ev, storage=storage)
    path = data / "test.toml"
    path.write_text(render_config(cfg))
    return path


def with_inputs_script(config: Path, script: str) -> None:
    cfg = load_config(config)
    inputs = SensorConfig(driver="sim", enabled=True, options=types.MappingProxyType({"script": script}))
    config.write_text(render_config(dataclasses.replace(cfg, inputs=inputs)))


RUNNING: list[subprocess.Popen[bytes]] = []  # every agent started, killed by the suite's teardown


class AgentProcess:
    """``bodycam run --sim`` as a child process, with its log captured to a file."""

    def __init__(
        self, data: Path, config: Path, duration_s: float | None = None, *, log_path: Path | None = None
    ) -> None:
        self.data = data
        self.log_path = log_path or data / "agent.log"  # elsewhere when the data dir's disk is filled
        cmd = [str(BIN / "bodycam"), "run", "--sim", "--data-dir", str(data), "--config", str(config)]
        if duration_s is not None:
            cmd += ["--duration", str(duration_s)]
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)
        RUNNING.append(self.proc)

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited early ({self.proc.returncode}):\n{self.log()}")
            if (self.data / "ctl.sock").exists():
                try:
                    if request(self.data / "ctl.sock", "status")["ok"]:
                        return
                except OSError:
                    pass
            time.sleep(0.1)
        raise AssertionError(f"agent not ready after {timeout_s} s:\n{self.log()}")

    def ctl(self, cmd: str, **args: Any) -> dict[str, Any]:
        return request(self.data / "ctl.sock", cmd, args)

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout_s: float = 60.0) -> int:
        try:
            code = self.proc.wait(timeout_s)
        finally:
            self._log.close()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._log.close()

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")


def run_cli(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    exe = "bodycam-hq" if args[0] == "hq" else "bodycam"
    argv = list(args[1:]) if args[0] == "hq" else list(args)
    return subprocess.run([str(BIN / exe), *argv], capture_output=True, text=True, check=check)


def verify_json(data: Path, *extra: str) -> dict[str, Any]:
    out = run_cli("verify", str(data), "--device-pub", str(data / "device.pub"), "--json", *extra)
    doc: dict[str, Any] = json.loads(out.stdout)
    doc["_exit"] = out.returncode
    return doc
