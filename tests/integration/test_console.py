"""The technician console on a real pseudo-terminal, served by the real agent on simulated sensors.

One unit runs for the whole module; the tests talk to it the way a technician's laptop would:
typed lines, JSON lines, the ``bodycam diag`` client, a pulled cable, a flood of garbage while
recording. The console device in the config is a symlink to the pty, so a test can "replug"
the cable by pointing it at a fresh pty.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.config import load_config, render_config
from agent.console.auth import login_message, raw_public
from agent.daemon import EXIT_RESTART
from agent.evidence.manifest import parse_manifest_record
from agent.evidence.segment import scan
from tests.console_util import Line, NullModem, diag
from tests.integration.agent_util import BIN, AgentProcess, provision_sim, verify_json

PROMPT = b"bodycam:it-unit-1"
# a technician key file whose name (the name the unit logs and shows) is a terminal attack: clear the
# screen, retitle the window, forge a verdict with CSI as one C1 character, reverse the text after it
EVIL = "\x1b[2J\x1b[H\x1b]0;pwned\x07\u009b32mVERDICT: PASS\u009b0m\u202eevil"
ACTIVE = ("\x1b", "\x07", "\u009b", "\u202e")


def audit_rows(data: Path, action: str) -> list[dict[str, Any]]:
    with sqlite3.connect(f"file:{data / 'index.sqlite'}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT actor, action, target, outcome, detail FROM audit WHERE action = ? ORDER BY id",
                          (action,)).fetchall()
    return [{"actor": a, "action": b, "target": t, "outcome": o, "detail": json.loads(d)} for a, b, t, o, d in rows]


@dataclasses.dataclass
class Unit:
    data: Path
    config: Path
    agent: AgentProcess
    line: Line
    key: ed25519.Ed25519PrivateKey
    key_path: Path
    evil: ed25519.Ed25519PrivateKey  # trusted, under a name full of terminal controls

    def audit(self, action: str) -> list[dict[str, Any]]:
        return audit_rows(self.data, action)

    def events(self, name: str) -> list[dict[str, Any]]:
        out = []
        for p in sorted((self.data / "segments").glob("*.bcs")):
            with p.open("rb") as fh:
                s = scan(fh)
            if s.manifest_record is not None:
                m = parse_manifest_record(s.manifest_record).manifest
                if m.get("event") == name:
                    out.append(m)
        return out


def write_public(path: Path, key: ed25519.Ed25519PrivateKey) -> None:
    path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo))


def console_unit(data: Path, **console: Any) -> tuple[Path, Line, ed25519.Ed25519PrivateKey, Path]:
    """A provisioned simulated unit whose console is a pty and trusts alice: (config, line, key, key file)."""
    cfg_path = provision_sim(data, pre_event_s=2.0, segment_s=4.0)
    key = ed25519.Ed25519PrivateKey.generate()
    key_path = data.parent / "alice.key"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    write_public(data / "alice.pub", key)
    link = data.parent / "console-tty"
    line = Line(link, PROMPT)
    cfg = load_config(cfg_path)
    settings = dataclasses.replace(cfg.console, device=str(link), technician_keys=("alice.pub",), **console)
    cfg_path.write_text(render_config(dataclasses.replace(cfg, console=settings)))
    return cfg_path, line, key, key_path


@pytest.fixture(scope="module")
def unit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Unit]:
    data = tmp_path_factory.mktemp("console") / "unit"
    data.mkdir(parents=True)
    evil = ed25519.Ed25519PrivateKey.generate()
    write_public(data / f"{EVIL}.pub", evil)
    cfg_path, line, key, key_path = console_unit(data, lockout_after=2, lockout_base_s=1.0, lockout_max_s=2.0)
    cfg = load_config(cfg_path)
    console = dataclasses.replace(cfg.console, technician_keys=("alice.pub", f"{EVIL}.pub"))
    cfg_path.write_text(render_config(dataclasses.replace(cfg, console=console)))
    agent = AgentProcess(data, cfg_path)
    try:
        agent.wait_ready()
        line.wait_served()
        yield Unit(data, cfg_path, agent, line, key, key_path, evil)
    finally:
        if agent.proc.poll() is None:
            agent.terminate()
            agent.wait(60)
        line.close()


# -- every command, both modes ----------------------------------------------------------------------

HUMAN = [
    ("help", ["selftest", "record start|stop|mark", "needs a technician login"]),
    ("version", ["firmware", "format_version", "config_sha256"]),
    ("status", ["recording  ready", "storage", "battery", "time", "gnss", "sync", "dropped", "faults     none"]),
    ("sensors", ["SENSOR", "chest", "thermal", "audio", "gnss", "sim"]),
    ("selftest", ["sensor chest", "encoder video", "seal test segment", "evidence index", "clock", "VERDICT: PASS"]),
    ("log 5", [" I "]),
    ("time", ["utc ", " UTC", "source", "synced"]),  # human units (issue 12), not raw ns
    ("gps", ["fix", "receiver", "hidden: log in to see it"]),
    ("storage", ["level", "free", "recording left", "evidence held"]),  # human units (issue 12)
    ("sync", ["state", "backlog_entries"]),
    ("keys", ["device", "hq-encryption", "technician", "alice"]),
    ("config get recording.pre_event_s", ["running", "2.0"]),
    ("config list", ["recording.pre_event_s", "console.login_required_for_read"]),
]


@pytest.mark.parametrize(("line", "expected"), HUMAN, ids=[h[0] for h in HUMAN])
def test_a_person_runs_every_read_command(unit: Unit, line: str, expected: list[str]) -> None:
    out = unit.line.type(line)
    assert out.startswith(line + "\r\n"), out  # echoed as typed
    assert "error (" not in out, out
    for word in expected:
        assert word in out, (word, out)


def test_typing_with_backspaces_and_arrow_keys_works(unit: Unit) -> None:
    unit.line.buf = b""
    unit.line.write(b"sensx\x7forz\x08\x1b[As\r")  # sens, orz, rub out z, (up arrow), s
    out = unit.line.read_until(PROMPT).decode()
    assert "SENSOR" in out and "error" not in out


READS = ["help", "version", "status", "sensors", "log", "time", "gps", "storage", "sync", "keys"]


@pytest.mark.parametrize("cmd", READS)
def test_a_script_runs_every_read_command(unit: Unit, cmd: str) -> None:
    doc = unit.line.ask(cmd)
    assert doc["ok"] is True and doc["cmd"] == cmd and isinstance(doc["data"], dict), doc


def test_selftest_in_machine_mode_gives_a_verdict_per_item(unit: Unit) -> None:
    time.sleep(5)  # past the per-line self-test cooldown
    doc = unit.line.ask("selftest", timeout_s=60)
    assert doc["ok"] and doc["data"]["verdict"] == "pass", doc
    assert {i["name"] for i in doc["data"]["items"]} >= {
        "sensor chest", "sensor thermal", "sensor audio", "sensor gnss", "encoder video", "encoder thermal",
        "encoder audio", "seal test segment", "evidence index", "clock", "storage", "recorder"}
    audit = unit.audit("console-selftest")[-1]
    assert audit["outcome"] == "ok" and audit["detail"]["verdict"] == "pass"
    assert not list((unit.data / "segments").glob("*selftest*"))


def test_changes_without_a_login_are_refused_and_audited(unit: Unit) -> None:
    for cmd, args in [("record", ["start"]), ("config", ["set", "recording.pre_event_s", "9"]), ("reboot", []),
                      ("sync", ["now"])]:
        doc = unit.line.ask(cmd, args)
        assert doc["error"]["code"] == "login-required", doc
    assert unit.audit("console-reboot")[-1]["outcome"] == "refused"
    assert unit.agent.ctl("status")["data"]["state"] == "ready"


# -- login, lockout, changes -------------------------------------------------------------------------


def test_login_lockout_and_their_audit_records(unit: Unit) -> None:
    stranger = ed25519.Ed25519PrivateKey.generate()
    assert unit.line.login(stranger)["error"]["code"] == "unknown-key"
    second = unit.line.login(stranger)["error"]
    assert second["code"] == "unknown-key" and "logins refused for 1 s" in second["message"]
    assert unit.line.ask("login")["error"]["code"] == "locked"
    time.sleep(1.2)
    doc = unit.line.login(unit.key)
    assert doc["ok"] and doc["data"]["technician"] == "alice", doc
    logins = unit.audit("console-login")
    assert [r["outcome"] for r in logins[-4:]] == ["failed", "failed", "refused", "ok"]
    assert logins[-1]["actor"].startswith("console:alice:") and logins[-1]["detail"]["via"] == "config"


def test_a_technician_records_marks_and_stops(unit: Unit) -> None:
    assert unit.line.login(unit.key)["ok"]
    assert unit.line.ask("record", ["start"])["ok"]
    time.sleep(1.5)
    assert unit.line.ask("record", ["mark", "door", "forced"])["data"]["recording"] is True
    assert unit.line.ask("record", ["start"])["error"] == {"code": "refused", "message": "already recording"}
    assert unit.line.ask("record", ["stop"])["ok"]
    start = unit.events("record-start")[-1]
    assert start["detail"]["trigger"] == "console" and start["detail"]["by"].startswith("console:alice:")
    audits = unit.audit("console-record")
    assert [r["outcome"] for r in audits[-4:]] == ["ok", "ok", "refused", "ok"]
    assert "door" not in json.dumps(audits)  # the note is sealed evidence, not audit text


def test_a_config_change_is_validated_persisted_and_signed(unit: Unit) -> None:
    assert unit.line.login(unit.key)["ok"]
    bad = unit.line.ask("config", ["set", "recording.pre_event_s", "500"])
    assert bad["error"]["code"] == "bad-value" and "out of range" in bad["error"]["message"]
    assert unit.line.ask("config", ["set", "hq.url", "https://evil"])["error"]["code"] == "refused"
    doc = unit.line.ask("config", {"action": "set", "key": "recording.pre_event_s", "value": 7.5})
    assert doc["ok"] and doc["data"]["changed"] and doc["data"]["old"] == 2.0, doc
    saved = load_config(unit.config)
    assert saved.recording.pre_event_s == 7.5 and saved.digest == doc["data"]["config_sha256"]
    event = unit.events("config-changed")[-1]
    assert event["detail"]["key"] == "recording.pre_event_s"
    assert (event["detail"]["old"], event["detail"]["new"]) == ("2.0", "7.5")
    assert event["detail"]["by"].startswith("console:alice:") and event["detail"]["config_sha256"] == saved.digest
    assert unit.audit("console-config")[-1]["outcome"] == "ok"
    assert unit.audit("config_changed")[-1]["outcome"] == "ok"  # the recorder's own record
    got = unit.line.ask("config", ["get", "recording.pre_event_s"])["data"]
    assert (got["running"], got["saved"]) == (2.0, 7.5)
    assert unit.line.ask("version")["data"]["restart_pending"] is True


def test_a_person_logs_in_by_hand_and_types_changes(unit: Unit) -> None:
    line = unit.line
    line.type("logout")
    line.session = None  # the script's session ended with it
    assert "error (login-required)" in line.type("record mark")
    out = line.type("login")
    nonce = out.split("challenge for unit it-unit-1: ")[1].split()[0]
    sig = unit.key.sign(login_message("it-unit-1", bytes.fromhex(nonce))).hex()
    out = line.type(f"login {raw_public(unit.key.public_key()).hex()} {sig}")
    assert "logged in as alice" in out and out.endswith("bodycam:it-unit-1# ")
    assert "recording  False" in line.type("record mark typed by hand")
    out = line.type("config set sync.interval_s 6")
    assert "changed" in out and "True" in out, out
    assert unit.events("config-changed")[-1]["detail"]["key"] == "sync.interval_s"
    assert "error (unavailable): sync is off" in line.type("sync now")
    assert "logged_out  True" in line.type("logout")
    assert "error (login-required)" in line.type("reboot")


# -- robustness --------------------------------------------------------------------------------------


def test_overlong_lines_binary_garbage_and_wrong_parity_get_errors_then_it_answers(unit: Unit) -> None:
    line = unit.line
    line.buf = b""
    line.write_paced(b"x" * 10_000 + b"\r")
    assert b"error (too-long)" in line.read_until(PROMPT)
    line.write(b"\xff\xfe\x00\x81garbage\r")
    assert b"error (not-utf8)" in line.read_until(PROMPT)
    line.write(bytes(b | 0x80 for b in b"status\r"))  # what 8N1 reads when the laptop sends 7E1 or 7O1
    line.write(b"\r")
    assert b"error (" in line.read_until(PROMPT)
    assert unit.line.ask("version")["ok"]


def test_megabytes_of_garbage_while_recording_drop_no_frame(unit: Unit) -> None:
    line = unit.line
    assert line.login(unit.key)["ok"]
    assert line.ask("record", ["start"])["ok"]
    time.sleep(2)
    before = unit.agent.ctl("status")["data"]
    stop = threading.Event()
    drained = [0]

    def drain() -> None:  # a laptop keeps reading while its cat walks on the keyboard
        while not stop.is_set():
            drained[0] += len(line.read_some(0.1))

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    rng = __import__("random").Random(7)
    sent = 0
    t0 = time.monotonic()
    while sent < 4 << 20:
        chunk = rng.randbytes(65536)
        line.write(chunk)
        sent += len(chunk)
    flood_s = time.monotonic() - t0
    time.sleep(1.0)
    stop.set()
    reader.join()
    line.buf = b""
    doc = line.ask("status", timeout_s=20)
    assert doc["ok"], doc
    after = doc["data"]
    assert after["state"] == "recording"
    assert after["dropped"] == dict.fromkeys(after["dropped"], 0), after["dropped"]
    assert all(after["frames"][t] > before["frames"][t] for t in before["frames"]), (before["frames"], after)
    assert after["lost_to_storage"] == dict.fromkeys(after["lost_to_storage"], 0)
    assert unit.agent.ctl("status")["data"]["dropped"] == dict.fromkeys(after["dropped"], 0)
    assert line.ask("record", ["stop"])["ok"]
    print(f"flood: {sent} bytes in {flood_s:.1f} s, {drained[0]} bytes answered")


def test_a_pulled_cable_ends_the_login_and_a_new_cable_is_served(unit: Unit) -> None:
    assert unit.line.login(unit.key)["ok"]
    unit.line.write(b'{"cmd":"record","args":["st')  # pulled mid-command
    unit.line.close()
    unit.line = Line(unit.line.link, PROMPT)  # plugged back in: a new device behind the same name
    unit.line.wait_served()
    doc = unit.line.ask("record", ["start"])
    assert doc["error"]["code"] == "login-required", doc
    logout = unit.audit("console-logout")[-1]
    assert logout["detail"]["reason"].startswith("line lost") and logout["actor"].startswith("console:alice:")
    assert unit.agent.ctl("status")["data"]["state"] == "ready"


# -- the technician's client -------------------------------------------------------------------------


def test_the_diag_client_runs_the_selftest_and_logs_in_by_itself(unit: Unit, tmp_path: Path) -> None:
    modem = NullModem(unit.line)
    try:
        time.sleep(5)  # past the per-line self-test cooldown
        out = diag("--port", modem.path, "selftest")
        assert out.returncode == 0, out.stderr
        assert "VERDICT: PASS" in out.stdout and "seal test segment" in out.stdout
        out = diag("--port", modem.path, "record", "mark")
        assert out.returncode == 1 and "--key" in out.stderr
        out = diag("--port", modem.path, "--key", str(unit.key_path), "--json", "record", "mark", "from", "diag")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["data"] == {"recording": False}
        assert unit.audit("console-login")[-1]["outcome"] == "ok"
        out = diag("--port", modem.path, "--json", "status")
        assert json.loads(out.stdout)["data"]["device_id"] == "it-unit-1"
        out = diag("--port", modem.path, "--key", str(unit.key_path), stdin="sensors\nsync now\nquit\n",
                   home=tmp_path)  # interactive, with history
        assert out.returncode == 0, out.stderr
        assert "connected to unit it-unit-1" in out.stdout and "SENSOR" in out.stdout
        assert "error (unavailable): sync is off" in out.stderr  # logged in by itself, then an honest refusal
        assert (tmp_path / ".bodycam_diag_history").exists()
    finally:
        modem.close()


def test_a_later_diag_without_a_key_does_not_act_as_the_technician_before_it(unit: Unit) -> None:
    modem = NullModem(unit.line)
    try:
        out = diag("--port", modem.path, "--key", str(unit.key_path), "--json", "record", "mark")
        assert out.returncode == 0 and json.loads(out.stdout)["ok"], out.stderr
        logouts = len(unit.audit("console-logout"))
        starts = len(unit.events("record-start"))
        for args in (["record", "start"], ["record", "stop"], ["config", "set", "sync.interval_s", "7"]):
            out = diag("--port", modem.path, "--json", *args)  # the next person on the line, no key
            assert json.loads(out.stdout)["error"]["code"] == "login-required", out.stdout
            assert unit.audit(f"console-{args[0]}")[-1]["actor"] == "console:anonymous"
        assert len(unit.events("record-start")) == starts
        assert load_config(unit.config).sync.interval_s != 7
        logout = unit.audit("console-logout")[logouts - 1]  # diag logged out before it exited
        assert logout["actor"].startswith("console:alice:") and logout["detail"]["reason"] == "logout"
    finally:
        modem.close()


def test_an_interrupted_diag_still_logs_out(unit: Unit, tmp_path: Path) -> None:
    modem = NullModem(unit.line)
    try:
        proc = subprocess.Popen([str(BIN / "bodycam"), "diag", "--port", modem.path, "--key", str(unit.key_path)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=dict(os.environ, HOME=str(tmp_path), PYTHONUNBUFFERED="1"))
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("record mark\n")
        proc.stdin.flush()
        while "recording" not in (line := proc.stdout.readline()):
            assert line, proc.stderr.read() if proc.stderr else ""
        logouts = len(unit.audit("console-logout"))
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        proc.communicate(timeout=30)
        logout = unit.audit("console-logout")[logouts:]
        assert [r["detail"]["reason"] for r in logout] == ["logout"], logout
        assert logout[0]["actor"].startswith("console:alice:")
    finally:
        modem.close()


def test_a_log_answer_full_of_terminal_controls_reaches_the_screen_escaped(unit: Unit) -> None:
    assert unit.line.login(unit.evil)["ok"]
    for _ in range(2):  # the unit logs each start and stop with its actor: the technician's name
        assert unit.line.ask("record", ["start"])["ok"]
        assert unit.line.ask("record", ["stop"])["ok"]
    assert unit.line.ask("logout")["ok"]
    unit.line.session = None
    typed = unit.line.type("log 50")
    assert "VERDICT: PASS" in typed and not any(c in typed for c in ACTIVE), typed
    modem = NullModem(unit.line)
    try:
        out = diag("--port", modem.path, "log", "50")
        assert out.returncode == 0, out.stderr
        assert out.stdout.count("VERDICT: PASS") >= 4
        assert not any(c in out.stdout for c in ACTIVE), out.stdout
        assert "\\x1b[2J\\x1b[H\\x1b]0;pwned\\x07\\x9b32m" in out.stdout
        raw = diag("--port", modem.path, "--json", "log", "50").stdout  # JSON: the data as it is, inert
        assert not any(c in raw for c in ACTIVE) and EVIL in "\n".join(json.loads(raw)["data"]["lines"])
    finally:
        modem.close()


def test_diag_says_clearly_when_the_port_is_absent_or_silent(unit: Unit, tmp_path: Path) -> None:
    out = diag("--port", str(tmp_path / "ttyACM9"), "status")
    assert out.returncode == 3 and "no such port" in out.stderr
    master, slave = os.openpty()  # a port with nothing behind it
    try:
        out = diag("--port", os.ttyname(slave), "--timeout", "1", "status")
        assert out.returncode == 3 and "no answer from the unit" in out.stderr and "baud" in out.stderr
    finally:
        os.close(master)
        os.close(slave)


# -- a unit of its own: idle timeout, lockout across a restart ---------------------------------------


def test_an_idle_session_ends_and_the_lockout_survives_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "unit"
    cfg_path, line, key, _ = console_unit(data, session_idle_s=2.0, lockout_after=1, lockout_base_s=120.0,
                                          lockout_max_s=600.0)
    agent = AgentProcess(data, cfg_path)
    try:
        agent.wait_ready()
        line.wait_served()
        assert line.login(key)["ok"]
        assert line.ask("record", ["mark"])["ok"]
        for _ in range(8):  # someone else polls the line; that keeps no one's session alive
            assert line.ask("status", session=None)["ok"]
            time.sleep(0.5)
        doc = line.ask("record", ["start"])
        assert doc["error"]["code"] == "session-ended" and "idle" in doc["error"]["message"], doc
        logout = [r for r in audit_rows(data, "console-logout") if r["detail"]["reason"] == "idle"]
        assert len(logout) == 1 and logout[0]["actor"].startswith("console:alice:")

        line.session = None
        assert line.login(ed25519.Ed25519PrivateKey.generate())["error"]["code"] == "unknown-key"  # locked 120 s
        assert line.ask("login")["error"]["code"] == "locked"
        agent.terminate()
        assert agent.wait(60) == 0
        line.close()
        line = Line(line.link, PROMPT)
        agent = AgentProcess(data, cfg_path)  # a restart must not be a way around the lockout
        agent.wait_ready()
        line.wait_served()
        doc = line.ask("login")
        assert doc["error"]["code"] == "locked", doc
        assert "PRIVATE KEY" not in (data / "console-lockout.json").read_text()
    finally:
        if agent.proc.poll() is None:
            agent.terminate()
            agent.wait(60)
        line.close()


# -- last: reboot ------------------------------------------------------------------------------------


def test_reboot_stops_the_agent_cleanly_and_the_evidence_verifies(unit: Unit) -> None:
    assert unit.line.login(unit.key)["ok"]
    doc = unit.line.ask("reboot")
    assert doc["ok"] and doc["data"]["restarting"], doc
    # a clean stop, then the exit status that makes systemd (Restart=on-failure) start it again
    assert unit.agent.wait(60) == EXIT_RESTART, unit.agent.log_path.read_text()
    assert unit.audit("console-reboot")[-1]["outcome"] == "ok"
    report = verify_json(unit.data)
    assert report["_exit"] == 0 and report["ok"], report["problems"]
    assert report["clean_end"]
    assert "PRIVATE KEY" not in unit.agent.log_path.read_text()
