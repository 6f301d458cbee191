"""A real headquarters service on loopback, and a unit provisioned and enrolled against it."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import time
from pathlib import Path

from agent.config import load_config, render_config
from tests.integration.agent_util import BIN, run_cli


class ServingProcess:
    """A ``bodycam-hq`` command that prints the URL it serves on its first line of stdout; its
    stderr goes to ``log_path``. ``url`` is what ``pattern`` (one group: the port) found."""

    def __init__(self, args: list[str], log_path: Path, scheme: str) -> None:
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen([str(BIN / "bodycam-hq"), *args], stdout=subprocess.PIPE, stderr=self._log)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        m = re.search(scheme + r"://127\.0\.0\.1:(\d+)/", line)
        assert m, f"no serving line from bodycam-hq {args[0]}: {line!r}\n{log_path.read_text()}"
        self.url = f"{scheme}://127.0.0.1:{m.group(1)}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        finally:
            self._log.close()


class HqProcess(ServingProcess):
    """``bodycam-hq serve`` on 127.0.0.1 with a port chosen by the kernel (or ``listen``)."""

    def __init__(self, data: Path, *extra: str, listen: str = "127.0.0.1:0", extra_args: tuple[str, ...] = ()) -> None:
        self.data = data
        super().__init__(["serve", "--data-dir", str(data), "--listen", listen, *extra, *extra_args],
                         data / "hq.log", "https")


def hq_keygen(hq: Path) -> None:
    res = run_cli("hq", "keygen", "--data-dir", str(hq))
    assert res.returncode == 0, res.stderr


def provision_for_hq(unit: Path, hq: Path, url: str, device_id: str, segment_s: float = 3.0) -> Path:
    keys = hq / "keys"
    res = run_cli(
        "provision", "--data-dir", str(unit), "--device-id", device_id, "--hq-pub", str(keys / "hq.pub"),
        "--hq-url", url, "--hq-ca", str(keys / "ca.pem"),
    )
    assert res.returncode == 0, res.stderr
    res = run_cli("hq", "enroll", "--data-dir", str(hq), "--device-id", device_id,
                  "--device-pub", str(unit / "device.pub"))
    assert res.returncode == 0, res.stderr
    cfg = load_config(unit / "bodycam.toml")
    cfg = dataclasses.replace(
        cfg,
        recording=dataclasses.replace(cfg.recording, pre_event_s=2.0),
        evidence=dataclasses.replace(cfg.evidence, segment_s=segment_s),
        storage=dataclasses.replace(
            cfg.storage, warn_free_bytes=64 << 20, critical_free_bytes=48 << 20, full_free_bytes=32 << 20,
            reserve_free_bytes=16 << 20,
        ),
        sync=dataclasses.replace(cfg.sync, interval_s=1.0, heartbeat_s=5.0),
    )
    path = unit / "test.toml"
    path.write_text(render_config(cfg))
    return path


def wait_until(cond: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")
