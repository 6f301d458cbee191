"""A technician on the serial console while the unit records."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.config import load_config, render_config
from agent.store import Store
from tests.console_util import Line, NullModem, diag
from tests.fakes import FakeClock
from tests.gpsd_util import Gpsd
from tests.hil.rig import Headquarters, NmeaFeeder, make_unit


def test_technician_session_during_recording(
    tmp_path: Path, hq: Headquarters, gpsd: Gpsd, feeder: NmeaFeeder, step: Callable[..., None]
) -> None:
    """self-test, status and a mark over the serial console while recording; nothing dropped."""
    hq.up()
    unit = make_unit(tmp_path, hq, gpsd, "hil-tech-1")
    key = ed25519.Ed25519PrivateKey.generate()
    key_path = tmp_path / "tech.key"
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    (unit.data / "tech.pub").write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    link = tmp_path / "ttyGS0"
    line = Line(link, b"bodycam:hil-tech-1")
    cfg = load_config(unit.config)
    console = dataclasses.replace(cfg.console, device=str(link), technician_keys=("tech.pub",))
    unit.config.write_text(render_config(dataclasses.replace(cfg, console=console)))
    t0 = time.monotonic()
    unit.start()
    unit.wait_ready(t0)
    line.wait_served()
    modem = NullModem(line)
    try:
        assert unit.ctl("start")["ok"]
        time.sleep(5)  # recording; past the console's self-test cooldown
        out = diag("--port", modem.path, "selftest")
        assert out.returncode == 0 and "VERDICT: PASS" in out.stdout, out.stdout + out.stderr
        step("technician ran the self-test while recording", verdict="PASS")
        out = diag("--port", modem.path, "--json", "status")
        status = json.loads(out.stdout)["data"]
        assert status["device_id"] == "hil-tech-1"
        step("status read over the console", state=status.get("recording", status.get("state")))
        out = diag("--port", modem.path, "--key", str(key_path), "--json", "record", "mark")
        assert out.returncode == 0 and json.loads(out.stdout)["data"]["recording"] is True, out.stderr
        step("technician logged in by challenge-response and marked the recording")
        out = diag("--port", modem.path, "keys")
        assert "PRIVATE" not in out.stdout and "BEGIN" not in out.stdout  # fingerprints only
    finally:
        modem.close()
        line.close()
    assert unit.ctl("stop")["ok"]
    st = unit.status()
    assert sum(st["dropped"].values()) == 0
    assert unit.stop() == 0, unit.log()
    with Store(unit.data / "index.sqlite", FakeClock()) as store:
        actions = [(e.actor, e.action, e.outcome) for e in store.audit_tail(200)]
    assert any(a == "console-login" and o == "ok" for _, a, o in actions)
    marks = sum(len(m["marks"]) for m in unit.manifests() if m["type"] == "segment")
    assert marks == 1
    step("audit holds the login and the mark; no frame dropped during the session", marks=marks)
