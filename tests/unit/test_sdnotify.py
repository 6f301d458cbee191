"""agent.sdnotify against real unix datagram sockets, as systemd's notify socket receives them."""

from __future__ import annotations

import logging
import os
import socket
import struct
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.sdnotify import Notifier, format_message, notify_address, watchdog_usec


class Manager:
    """A stand-in for systemd's notify socket: SO_PASSCRED on, like the real one, to see the sender."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(address)
        self.sock.settimeout(5)

    def receive(self) -> tuple[list[str], int]:
        """The message's lines and the sender's pid from its credentials."""
        data, ancdata, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        pid = -1
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid, _uid, _gid = struct.unpack("iII", payload[:12])
        return data.decode().splitlines(), pid

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def path_manager(tmp_path: Path) -> Iterator[tuple[Manager, str]]:
    path = str(tmp_path / "notify")
    manager = Manager(path)
    yield manager, path
    manager.close()


@pytest.fixture
def abstract_manager() -> Iterator[tuple[Manager, str]]:
    name = f"bodycam-test-{uuid.uuid4().hex}"
    manager = Manager(b"\0" + name.encode())
    yield manager, "@" + name
    manager.close()


def test_addresses() -> None:
    assert notify_address(None) is None
    assert notify_address("") is None
    assert notify_address("run/notify") is None  # relative: systemd never sets one
    assert notify_address("@") is None
    assert notify_address("vsock:2:1234") is None
    assert notify_address("/run/systemd/notify") == "/run/systemd/notify"
    assert notify_address("@sd/notify") == b"\0sd/notify"


def test_without_notify_socket_everything_is_a_quiet_no_op() -> None:
    with Notifier.from_environ({}) as n:
        assert not n.enabled
        assert n.watchdog_usec is None
        assert not n.ready("ready")
        assert not n.status("idle")
        assert not n.watchdog()
        assert not n.stopping()


def test_ready_status_watchdog_stopping_reach_a_path_socket(path_manager: tuple[Manager, str]) -> None:
    manager, path = path_manager
    with Notifier.from_environ({"NOTIFY_SOCKET": path}) as n:
        assert n.enabled
        assert n.ready("READY: recording off")
        assert manager.receive() == (["READY=1", "STATUS=READY: recording off"], os.getpid())
        assert n.status("RECORDING since 12:00:01")
        assert manager.receive()[0] == ["STATUS=RECORDING since 12:00:01"]
        assert n.watchdog()
        assert manager.receive()[0] == ["WATCHDOG=1"]
        assert n.extend_timeout(90)
        assert manager.receive()[0] == ["EXTEND_TIMEOUT_USEC=90000000"]
        assert n.stopping("sealing")
        assert manager.receive()[0] == ["STOPPING=1", "STATUS=sealing"]
        assert n.watchdog_trigger()
        assert manager.receive()[0] == ["WATCHDOG=trigger"]


def test_abstract_socket(abstract_manager: tuple[Manager, str]) -> None:
    manager, address = abstract_manager
    with Notifier.from_environ({"NOTIFY_SOCKET": address}) as n:
        assert n.ready()
        assert manager.receive() == (["READY=1"], os.getpid())


def test_sends_from_another_thread_carry_the_process_id(path_manager: tuple[Manager, str]) -> None:
    # systemd's NotifyAccess=main accepts messages from the main pid: threads must qualify
    manager, path = path_manager
    with Notifier.from_environ({"NOTIFY_SOCKET": path}) as n:
        t = threading.Thread(target=n.watchdog)
        t.start()
        t.join()
        assert manager.receive() == (["WATCHDOG=1"], os.getpid())


def test_a_newline_cannot_smuggle_an_assignment(path_manager: tuple[Manager, str]) -> None:
    manager, path = path_manager
    with Notifier.from_environ({"NOTIFY_SOCKET": path}) as n:
        assert n.status("sensor fault: camera\nREADY=1\r\n")
        assert manager.receive()[0] == ["STATUS=sensor fault: camera READY=1  "]


def test_bad_field_names_are_refused_even_outside_systemd() -> None:
    with pytest.raises(ValueError, match="field name"):
        Notifier(None).send(**{"status": "x"})
    with pytest.raises(ValueError, match="field name"):
        format_message({"A=B": "x"})


def test_a_missing_manager_is_logged_once_and_never_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = str(tmp_path / "gone")
    with caplog.at_level(logging.INFO, logger="agent.sdnotify"), Notifier.from_environ({"NOTIFY_SOCKET": path}) as n:
        assert not n.watchdog()
        assert not n.watchdog()
        assert sum("notifying systemd through" in r.message for r in caplog.records) == 1
        manager = Manager(path)  # systemd is back (daemon-reexec keeps the path)
        try:
            assert n.watchdog()
            assert manager.receive()[0] == ["WATCHDOG=1"]
        finally:
            manager.close()
        assert any("works again" in r.message for r in caplog.records)


def test_unusable_notify_socket_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="agent.sdnotify"):
        assert not Notifier.from_environ({"NOTIFY_SOCKET": "relative/path"}).enabled
    assert "not a socket this agent can use" in caplog.text


def test_watchdog_usec() -> None:
    pid = 4242
    assert watchdog_usec({}, pid) is None
    assert watchdog_usec({"WATCHDOG_USEC": "30000000"}, pid) == 30_000_000
    assert watchdog_usec({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, pid) == 30_000_000
    assert watchdog_usec({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, pid) is None  # inherited
    assert watchdog_usec({"WATCHDOG_USEC": "0"}, pid) is None
    assert watchdog_usec({"WATCHDOG_USEC": "-5"}, pid) is None
    assert watchdog_usec({"WATCHDOG_USEC": "soon"}, pid) is None
    assert watchdog_usec({"WATCHDOG_USEC": "5", "WATCHDOG_PID": "x"}, pid) is None


def test_watchdog_interval_only_when_notifying(path_manager: tuple[Manager, str]) -> None:
    _, path = path_manager
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid())}
    with Notifier.from_environ(env) as n:
        assert n.watchdog_usec == 20_000_000
    assert Notifier.from_environ({"WATCHDOG_USEC": "20000000"}).watchdog_usec is None
