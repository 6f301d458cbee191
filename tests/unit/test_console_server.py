"""The console's serial thread over fake ports: serving, reopening, never raising, floods."""

from __future__ import annotations

import errno
import os
import threading
import time
from collections import deque
from collections.abc import Callable

import serial

from agent.console.server import ConsoleServer, describe
from tests.fakes import FakeClock
from tests.unit.test_console_session import Rig


class FakePort:
    """Reads come from a queue (an exception in it is raised by ``read``); writes are kept."""

    def __init__(self, reads: list[bytes | Exception] | None = None, write_error: Exception | None = None) -> None:
        self.reads: deque[bytes | Exception] = deque(reads or [])
        self.written = bytearray()
        self.write_error = write_error
        self.closed = False
        self.lock = threading.Lock()

    @property
    def in_waiting(self) -> int:
        with self.lock:
            head = self.reads[0] if self.reads else b""
            return len(head) if isinstance(head, bytes) else 0

    def read(self, size: int = 1) -> bytes:
        with self.lock:
            item = self.reads.popleft() if self.reads else b""
        if isinstance(item, Exception):
            raise item
        if not item:
            time.sleep(0.005)
        return item

    def write(self, data: bytes) -> int:
        if self.write_error is not None:
            raise self.write_error
        with self.lock:
            self.written += data
        return len(data)

    def reset_output_buffer(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class Opener:
    def __init__(self, *results: FakePort | Exception) -> None:
        self.results = deque(results)
        self.calls = 0

    def __call__(self, device: str, baud: int) -> FakePort:
        self.calls += 1
        item = self.results.popleft() if len(self.results) > 1 else self.results[0]
        if isinstance(item, Exception):
            raise item
        return item


def run(server: ConsoleServer, until: Callable[[], bool], timeout_s: float = 5.0) -> None:
    server.start()
    try:
        deadline = time.monotonic() + timeout_s
        while not until() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert until(), server.get_status()
    finally:
        server.close()
    assert not server.alive


def test_it_answers_what_arrives() -> None:
    rig = Rig()
    port = FakePort([b"version\r", b'{"cmd":"status","id":1}\n'])
    server = ConsoleServer("/dev/fake", 115200, rig.session, FakeClock(), Opener(port))
    run(server, lambda: b'"id":1' in port.written)
    assert b"firmware" in port.written
    assert server.get_status()["bytes_in"] == len(b"version\r") + len(b'{"cmd":"status","id":1}\n')


def test_an_absent_device_is_retried_with_backoff_until_it_appears() -> None:
    rig = Rig()
    port = FakePort([b"version\r"])
    missing = serial.SerialException(errno.ENOENT, "could not open port")
    opener = Opener(missing, missing, missing, port)
    server = ConsoleServer("/dev/fake", 115200, rig.session, FakeClock(), opener,
                           reopen_start_s=0.01, reopen_max_s=0.02)
    run(server, lambda: b"firmware" in port.written)
    assert opener.calls == 4 and server.get_status()["opens"] == 1


def test_a_pulled_cable_ends_the_login_and_the_port_is_reopened() -> None:
    rig = Rig()
    rig.login()
    first = FakePort([serial.SerialException("device reports readiness to read but returned no data")])
    second = FakePort([b'{"cmd":"reboot","id":2}\n'])
    server = ConsoleServer("/dev/fake", 115200, rig.session, FakeClock(), Opener(first, second),
                           reopen_start_s=0.01)
    run(server, lambda: b'"id":2' in second.written)
    assert first.closed
    assert b"login-required" in second.written
    assert rig.backend.audits[-2]["action"] == "console-logout"


def test_a_session_bug_never_leaves_the_thread() -> None:
    rig = Rig()

    def broken(data: bytes, now_ns: int) -> bytes:
        raise RuntimeError("bug")

    rig.session.feed = broken  # type: ignore[method-assign]
    port = FakePort([b"status\r"])
    server = ConsoleServer("/dev/fake", 115200, rig.session, FakeClock(), Opener(port))
    run(server, lambda: b"error (internal)" in port.written)


def test_a_host_that_stops_reading_costs_one_answer_not_the_line() -> None:
    rig = Rig()
    port = FakePort([b"status\r", b"version\r"], write_error=serial.SerialTimeoutException("Write timeout"))
    opener = Opener(port)
    server = ConsoleServer("/dev/fake", 115200, rig.session, FakeClock(), opener)
    seen: list[bool] = []

    def drained() -> bool:
        seen.append(server.get_status()["open"])
        return not port.reads

    run(server, drained)
    assert opener.calls == 1 and seen[-1] is True


def test_a_flood_is_thrown_away_without_parsing_and_reported_once() -> None:
    rig = Rig()
    clock = FakeClock()
    garbage = os.urandom(4096)
    port = FakePort([garbage] * 200)
    server = ConsoleServer("/dev/fake", 9600, rig.session, clock, Opener(port))

    def quiet_later() -> bool:
        clock.advance(0.01)
        if not port.reads:
            clock.advance(1.0)  # the quiet time that ends a flood
        return b"input flood" in port.written

    run(server, quiet_later, timeout_s=20)
    status = server.get_status()
    assert status["discarded"] > 150 * 4096
    assert port.written.count(b"input flood") == 1


def test_describe_names_the_usual_problems() -> None:
    assert describe(serial.SerialException(errno.ENOENT, "x")) == "no such device"
    assert describe(serial.SerialException(errno.EACCES, "x")) == "permission denied"
    assert "busy" in describe(serial.SerialException(11, "Could not exclusively lock port /dev/x"))


class ModemPort(FakePort):
    """A UART with modem lines: ``up`` is what DCD/DSR show (the laptop's DTR through the cable)."""

    def __init__(self, reads: list[bytes | Exception]) -> None:
        super().__init__(reads)
        self.up = True

    @property
    def cd(self) -> bool:
        return self.up

    @property
    def dsr(self) -> bool:
        return self.up


def test_dtr_dropped_by_the_laptop_ends_the_login_and_the_port_stays_open() -> None:
    rig = Rig()
    rig.login()
    port = ModemPort([b'{"cmd":"version","id":1}\n'])
    opener = Opener(port)
    server = ConsoleServer("/dev/fake", 115200, rig.session, FakeClock(start_mono_ns=rig.now), opener)

    def dropped_then_back() -> bool:
        if b'"id":1' in port.written and port.up:
            port.up = False  # the technician's program closed the port
        elif not port.up and any(a["action"] == "console-logout" for a in rig.backend.audits):
            port.up = True
            port.reads.append(b'{"cmd":"reboot","id":2}\n')  # the next program on the line
        return b'"id":2' in port.written

    run(server, dropped_then_back)
    logout = [a for a in rig.backend.audits if a["action"] == "console-logout"]
    assert [a["reason"] for a in logout] == ["line lost: carrier lost"]
    assert b"login-required" in port.written or b"session-ended" in port.written
    assert opener.calls == 1  # the port stayed open for the next program


def test_a_port_without_modem_lines_is_never_hung_up() -> None:
    rig = Rig()
    rig.login()
    port = FakePort([b'{"cmd":"version","id":1}\n'])
    server = ConsoleServer("/dev/fake", 115200, rig.session, FakeClock(start_mono_ns=rig.now), Opener(port))
    run(server, lambda: b'"id":1' in port.written)
    assert not [a for a in rig.backend.audits if "carrier" in a.get("reason", "")]
