"""The hardware-in-the-loop rig: the agent started as its systemd unit starts it, with simulated
sensors, a real gpsd fed NMEA through a pty, a real headquarters on loopback, and a notify socket
that plays systemd's part."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import types
from pathlib import Path
from typing import Any

from agent.config import SensorConfig, load_config, render_config
from agent.control import request
from agent.evidence.manifest import parse_manifest_record
from agent.evidence.segment import scan
from drivers import nmea
from drivers.sim_gnss import DEFAULT_TRACK
from tests.gpsd_util import Gpsd, free_port
from tests.integration.agent_util import BIN, run_cli

WATCHDOG_USEC = 20_000_000  # as WatchdogSec=20 in systemd/bodycam-agent.service


class NotifySocket:
    """systemd's side of sd_notify: a unix datagram socket collecting every message."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((time.monotonic(), fields))

    def seen(self, key: str, value: str | None = None) -> list[float]:
        return [t for t, f in self.messages if key in f and (value is None or f[key] == value)]

    def statuses(self) -> list[str]:
        return [f["STATUS"] for _, f in self.messages if "STATUS" in f]

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


class NmeaFeeder:
    """Plays the shipped walk into gpsd at 1 Hz; ``tunnel()`` sends no-fix epochs instead."""

    def __init__(self, gpsd: Gpsd) -> None:
        lines = [ln for ln in DEFAULT_TRACK.read_text().splitlines() if ln.startswith("$")]
        self.epochs: list[list[str]] = []
        for line in lines:
            if line.startswith("$GPRMC"):
                self.epochs.append([])
            self.epochs[-1].append(line)
        self._gpsd = gpsd
        self.in_tunnel = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        i = 0
        while not self._stop.wait(1.0):
            if self.in_tunnel.is_set():
                hhmmss = time.strftime("%H%M%S", time.gmtime())
                self._gpsd.write(
                    [
                        nmea.format_sentence(f"GPRMC,{hhmmss}.00,V,,,,,,,140524,,,N"),
                        nmea.format_sentence(f"GPGGA,{hhmmss}.00,,,,,0,00,99.99,,,,,,"),
                    ]
                )
            else:
                self._gpsd.write(self.epochs[i % len(self.epochs)])
                i += 1

    def stop(self) -> None:
        self._stop.set()


STARTED: list[subprocess.Popen[bytes]] = []  # every agent the rig started, killed at teardown


@dataclasses.dataclass
class Unit:
    data: Path
    config: Path
    proc: subprocess.Popen[bytes] | None = None
    notify: NotifySocket | None = None
    log_path: Path | None = None

    def ctl(self, cmd: str, **args: Any) -> dict[str, Any]:
        return request(self.data / "ctl.sock", cmd, args)

    def status(self) -> dict[str, Any]:
        reply = self.ctl("status")
        assert reply["ok"], reply
        data: dict[str, Any] = reply["data"]
        return data

    def start(self) -> None:
        """As systemd would: the unit's ExecStart, NOTIFY_SOCKET and WATCHDOG_USEC in the environment."""
        n = len(list(self.data.glob("agent*.log")))
        self.log_path = self.data / f"agent{n}.log"
        if self.notify is None:
            self.notify = NotifySocket(self.data.parent / f"notify-{self.data.name}.sock")
        env = dict(os.environ, NOTIFY_SOCKET=str(self.notify.path), WATCHDOG_USEC=str(WATCHDOG_USEC))
        env.pop("WATCHDOG_PID", None)
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [str(BIN / "bodycam"), "run", "--data-dir", str(self.data), "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        STARTED.append(self.proc)

    def wait_ready(self, since: float, timeout_s: float = 60) -> float:
        assert self.notify is not None and self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ready = [t for t in self.notify.seen("READY", "1") if t >= since]
            if ready:
                return ready[0] - since
            assert self.proc.poll() is None, f"agent exited early:\n{self.log()}"
            time.sleep(0.1)
        raise AssertionError(f"no READY=1 within {timeout_s} s:\n{self.log()}")

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(90)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def manifests(self) -> list[dict[str, Any]]:
        out = []
        for p in sorted((self.data / "segments").glob("*.bcs")):
            with p.open("rb") as fh:
                s = scan(fh)
            if s.manifest_record is not None:
                out.append(parse_manifest_record(s.manifest_record).manifest)
        return out

    def events(self) -> list[str]:
        return [m["event"] for m in self.manifests() if m["type"] == "event"]


class Headquarters:
    """``bodycam-hq serve`` on a fixed loopback port, so it can go away and come back (docking)."""

    def __init__(self, data: Path) -> None:
        self.data = data
        res = run_cli("hq", "keygen", "--data-dir", str(data))
        assert res.returncode == 0, res.stderr
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def up(self) -> None:
        log = (self.data / "hq.log").open("ab")
        self.proc = subprocess.Popen(
            [str(BIN / "bodycam-hq"), "serve", "--data-dir", str(self.data), "--listen", f"127.0.0.1:{self.port}"],
            stdout=subprocess.PIPE,
            stderr=log,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        assert re.search(r"https://127\.0\.0\.1:\d+", line), line

    def down(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(60)
            self.proc = None

    def enroll(self, unit: Path, device_id: str) -> None:
        res = run_cli(
            "hq",
            "enroll",
            "--data-dir",
            str(self.data),
            "--device-id",
            device_id,
            "--device-pub",
            str(unit / "device.pub"),
        )
        assert res.returncode == 0, res.stderr

    def held(self, device_id: str) -> set[int]:
        out = run_cli("hq", "evidence", "list", "--data-dir", str(self.data), "--device", device_id, "--json")
        doc = json.loads(out.stdout)
        entries = doc["evidence"] if isinstance(doc, dict) else doc
        return {int(e["seq"]) for e in entries}


def make_unit(
    root: Path,
    hq: Headquarters,
    gpsd: Gpsd,
    device_id: str,
    *,
    script: str = "",
    thermal: dict[str, Any] | None = None,
    keep_acknowledged_s: float = 3600.0,
    storage: dict[str, int] | None = None,
) -> Unit:
    data = root / device_id
    keys = hq.data / "keys"
    res = run_cli(
        "provision",
        "--data-dir",
        str(data),
        "--device-id",
        device_id,
        "--hq-pub",
        str(keys / "hq.pub"),
        "--hq-url",
        hq.url,
        "--hq-ca",
        str(keys / "ca.pem"),
    )
    assert res.returncode == 0, res.stderr
    hq.enroll(data, device_id)
    cfg = load_config(data / "bodycam.toml")
    small = types.MappingProxyType({"width": 640, "height": 360, "fps": 15})
    cfg = dataclasses.replace(
        cfg,
        cameras={"chest": SensorConfig(options=small)},
        thermal=SensorConfig(options=types.MappingProxyType(thermal or {})),
        gnss=SensorConfig(driver="gpsd", options=types.MappingProxyType({"port": gpsd.port})),
        inputs=SensorConfig(options=types.MappingProxyType({"script": script})),
        recording=dataclasses.replace(cfg.recording, pre_event_s=3.0, video_bitrate_bps=1_000_000),
        evidence=dataclasses.replace(cfg.evidence, segment_s=3.0),
        storage=dataclasses.replace(
            cfg.storage,
            keep_acknowledged_s=keep_acknowledged_s,
            **(
                storage
                or {
                    "warn_free_bytes": 64 << 20,
                    "critical_free_bytes": 48 << 20,
                    "full_free_bytes": 32 << 20,
                    "reserve_free_bytes": 16 << 20,
                }
            ),
        ),
        sync=dataclasses.replace(cfg.sync, interval_s=1.0, heartbeat_s=5.0, backoff_max_s=3.0),
    )
    path = data / "hil.toml"
    path.write_text(render_config(cfg))
    return Unit(data, path)


def wait_for(cond: Any, timeout_s: float, what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if cond():
            return time.monotonic() - start
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
