"""``bodycam diag`` against a console session in memory: login by itself, exit codes, key files, advice."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent import diag
from agent.console.auth import key_fingerprint
from tests.unit.test_console_session import Rig

S = 1_000_000_000


class LoopbackPort:
    """A serial port whose other end is a console session: what is written is fed to it."""

    def __init__(self, rig: Rig, junk: bytes = b"") -> None:
        self.rig = rig
        self.timeout: float | None = 0.2
        self.pending = bytearray(junk)
        self.sent = bytearray()

    def write(self, data: bytes) -> int:
        self.sent += data
        self.rig.now += S // 10
        self.pending += self.rig.session.feed(data, self.rig.now)
        return len(data)

    def read(self, size: int = 1) -> bytes:
        out, self.pending = bytes(self.pending[:size]), self.pending[size:]
        return out

    def close(self) -> None:
        pass


class SilentPort(LoopbackPort):
    def write(self, data: bytes) -> int:
        return len(data)


def key_file(tmp_path: Path, key: ed25519.Ed25519PrivateKey, mode: int = 0o600) -> Path:
    path = tmp_path / "tech.key"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(mode)
    return path


def test_a_one_shot_read_needs_no_key(capsys: pytest.CaptureFixture[str]) -> None:
    rig = Rig()
    client = diag.ConsoleClient(LoopbackPort(rig), "/dev/pts/9", 115200, timeout_s=1)
    assert diag.show(client.call("status", [], None, None), "status", False) == diag.EXIT_OK
    out = capsys.readouterr().out
    assert "recording  ready" in out and "unit       unit-7" in out


def test_the_client_logs_in_by_itself_when_a_change_needs_it(capsys: pytest.CaptureFixture[str]) -> None:
    rig = Rig()
    client = diag.ConsoleClient(LoopbackPort(rig), "/dev/pts/9", 115200, timeout_s=1)
    answer = client.call("record", ["start"], rig.key, None)
    assert answer["ok"], answer
    assert [a["action"] for a in rig.backend.audits] == ["console-record", "console-login", "console-record"]
    assert [a["outcome"] for a in rig.backend.audits] == ["refused", "ok", "ok"]


def test_without_a_key_a_change_is_refused_with_a_hint(capsys: pytest.CaptureFixture[str]) -> None:
    client = diag.ConsoleClient(LoopbackPort(Rig()), "/dev/pts/9", 115200, timeout_s=1)
    assert diag.show(client.call("reboot", [], None, None), "reboot", False) == diag.EXIT_FAILED
    assert "--key" in capsys.readouterr().err


def test_a_wrong_key_is_a_login_failure() -> None:
    client = diag.ConsoleClient(LoopbackPort(Rig()), "/dev/pts/9", 115200, timeout_s=1)
    with pytest.raises(diag.DiagError) as info:
        client.call("reboot", [], ed25519.Ed25519PrivateKey.generate(), None)
    assert info.value.exit_code == diag.EXIT_LOGIN and "unknown-key" in str(info.value)


def test_json_output_and_a_failed_selftest_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    from agent.console.backend import SelftestItem

    rig = Rig()
    rig.backend.selftest_items.append(SelftestItem("clock", "fail", "never set"))
    client = diag.ConsoleClient(LoopbackPort(rig), "/dev/pts/9", 115200, timeout_s=1)
    assert diag.show(client.call("selftest", [], None, None), "selftest", True) == diag.EXIT_FAILED
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] and doc["data"]["verdict"] == "fail"


def test_the_client_skips_junk_and_resynchronises() -> None:
    rig = Rig()
    rig.session.feed(b"half a typed li", rig.now)  # someone left a line half typed
    port = LoopbackPort(rig, junk=b"\x00\xffgarbage\r\nbodycam:unit-7> {not json}\r\n")
    client = diag.ConsoleClient(port, "/dev/pts/9", 115200, timeout_s=1)
    assert client.request("version", [])["ok"]
    assert port.sent.startswith(b"\x15\r\n{")


def test_a_silent_unit_gets_a_clear_message() -> None:
    client = diag.ConsoleClient(SilentPort(Rig()), "/dev/ttyUSB0", 9600, timeout_s=0.3)
    with pytest.raises(diag.DiagError) as info:
        client.request("version", [])
    assert info.value.exit_code == diag.EXIT_PORT
    assert "no answer from the unit on /dev/ttyUSB0 at 9600 baud" in str(info.value)
    assert "baud rate" in str(info.value)


def test_port_advice_for_absent_busy_and_forbidden_ports() -> None:
    assert "no such port /dev/ttyACM7" in diag.port_advice("/dev/ttyACM7", errno.ENOENT, "")
    assert "busy" in diag.port_advice("/dev/ttyACM0", errno.EAGAIN, "Could not exclusively lock port")
    assert "dialout" in diag.port_advice("/dev/ttyACM0", errno.EACCES, "")


def test_opening_an_absent_port_exits_3(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert diag.main(["--port", str(tmp_path / "ttyNONE"), "status"]) == diag.EXIT_PORT
    assert "no such port" in capsys.readouterr().err


def test_opening_a_busy_port_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    import serial

    master, slave = os.openpty()
    path = os.ttyname(slave)
    holder = serial.Serial(path, 115200, exclusive=True)
    try:
        assert diag.main(["--port", path, "status"]) == diag.EXIT_PORT
        assert "busy" in capsys.readouterr().err
    finally:
        holder.close()
        os.close(master)
        os.close(slave)


def test_a_key_others_can_read_is_refused(tmp_path: Path) -> None:
    path = key_file(tmp_path, ed25519.Ed25519PrivateKey.generate(), mode=0o644)
    with pytest.raises(diag.DiagError, match="chmod 600"):
        diag.load_technician_key(path)
    path.chmod(0o600)
    assert isinstance(diag.load_technician_key(path), ed25519.Ed25519PrivateKey)
    (tmp_path / "x.key").write_text("not a key")
    (tmp_path / "x.key").chmod(0o600)
    with pytest.raises(diag.DiagError, match="not an unencrypted PEM"):
        diag.load_technician_key(tmp_path / "x.key")


def test_keygen_writes_a_private_0600_key_and_a_public_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "alice.key"
    assert diag.main(["--keygen", str(path)]) == diag.EXIT_OK
    assert path.stat().st_mode & 0o777 == 0o600
    key = diag.load_technician_key(path)
    pub = serialization.load_pem_public_key((tmp_path / "alice.key.pub").read_bytes())
    assert key_fingerprint(pub) == key_fingerprint(key.public_key())  # type: ignore[arg-type]
    assert key_fingerprint(key.public_key()) in capsys.readouterr().out
    assert diag.main(["--keygen", str(path)]) == diag.EXIT_USAGE  # never overwrites a key


def test_a_certificate_next_to_the_key_is_found(tmp_path: Path) -> None:
    import argparse

    key = key_file(tmp_path, ed25519.Ed25519PrivateKey.generate())
    (tmp_path / "tech.key.cert").write_text("Q0VSVA==\n")
    ns = argparse.Namespace(cert=None, key=key)
    assert diag._cert_for(ns) == "Q0VSVA=="
