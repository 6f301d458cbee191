"""Starting the console from the config: trusted keys, a real pty, never an exception out of it."""

from __future__ import annotations

import dataclasses
import logging
import os
import select
import time
import tty
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.config import ConsoleConfig
from agent.console.auth import key_fingerprint
from agent.console.service import load_trust, start_console
from agent.unitapi.api import UnitApi
from tests.fakes import FakeClock
from tests.unit.test_console_backend import FakeAgent


def pem(key: ed25519.Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_trust_comes_from_files_and_inline_pem_and_bad_entries_are_skipped(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    alice, bob, ca = (ed25519.Ed25519PrivateKey.generate() for _ in range(3))
    (tmp_path / "alice.pub").write_bytes(pem(alice))
    (tmp_path / "ca.pem").write_bytes(pem(ca))
    cfg = ConsoleConfig(technician_keys=("alice.pub", pem(bob).decode(), "missing.pub"), technician_ca="ca.pem")
    trust = load_trust(cfg, tmp_path, "unit-7")
    names = {name for name, _ in trust.listed.values()}
    assert names == {"alice", f"technician-{key_fingerprint(bob.public_key())[:8]}"}
    assert trust.ca is not None and key_fingerprint(trust.ca) == key_fingerprint(ca.public_key())
    assert "technician_keys[2] is not usable" in caplog.text


def test_no_keys_means_read_only_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert load_trust(ConsoleConfig(technician_ca="nope.pem"), tmp_path, "u").empty
    assert "technician_ca is not usable" in caplog.text and "read-only commands only" in caplog.text


def test_no_device_no_console(tmp_path: Path) -> None:
    agent = FakeAgent(tmp_path, FakeClock())
    try:
        assert start_console(UnitApi(agent, config_path=tmp_path / "bodycam.toml")) is None  # type: ignore[arg-type]
    finally:
        agent.store.close()


def test_it_serves_a_real_pty_and_closes_cleanly(tmp_path: Path) -> None:
    master, slave = os.openpty()
    tty.setraw(slave)  # no kernel echo before the console opens it; kept open so the master never reads EIO
    path = os.ttyname(slave)
    agent = FakeAgent(tmp_path, FakeClock())
    agent.config = dataclasses.replace(agent.config, console=dataclasses.replace(agent.config.console, device=path))
    handlers = len(logging.getLogger().handlers)
    service = start_console(UnitApi(agent, config_path=tmp_path / "bodycam.toml"))  # type: ignore[arg-type]
    assert service is not None
    try:
        got = b""
        deadline = time.monotonic() + 10
        while b'"firmware"' not in got and time.monotonic() < deadline:
            os.write(master, b'{"cmd":"version","id":1}\n')
            if select.select([master], [], [], 0.5)[0]:
                got += os.read(master, 65536)
        assert b'"firmware"' in got and b'"device_id":"unit-7"' in got
    finally:
        service.close()
        os.close(master)
        os.close(slave)
        agent.store.close()
    assert not service.server.alive and len(logging.getLogger().handlers) == handlers


def test_a_device_that_never_appears_costs_nothing_but_a_log_line(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    agent = FakeAgent(tmp_path, FakeClock())
    missing = str(tmp_path / "ttyGS0")
    agent.config = dataclasses.replace(agent.config, console=dataclasses.replace(agent.config.console, device=missing))
    caplog.set_level(logging.WARNING)
    service = start_console(UnitApi(agent, config_path=tmp_path / "bodycam.toml"))  # type: ignore[arg-type]
    assert service is not None
    try:
        time.sleep(1.2)  # a few reopen attempts
        assert service.server.alive
        assert caplog.text.count("no such device") == 1
    finally:
        service.close()
        agent.store.close()
