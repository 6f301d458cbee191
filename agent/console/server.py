"""The console's serial line: one thread that opens the device, reads, answers, and survives.

The thread owns the port and the session. It reads with a short timeout, hands bytes to the
session and writes its answers with a write timeout, so a host that stops reading cannot block
it for long. When the device disappears (cable pulled, USB gadget re-enumerated) the login ends
and the port is reopened with backoff. Where the port shows modem lines (a UART wired with
DCD or DSR), the laptop dropping DTR, as it does when its program closes the port, ends the
login too, once the line had been seen up. A pty or a USB gadget shows no modem lines; there
the login ends on the idle timeout, and a script's session id keeps the next client out of it.
A received break cannot be told from a framing error through pyserial (both read as NUL), so
it is not used. Nothing escapes the thread: every error is logged and the
loop goes on, because the console must never take recording down with it.
"""

from __future__ import annotations

import errno
import logging
import threading
from typing import Any, Protocol

from agent.console.guards import FloodGuard
from hal.clock import Clock

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 0.1
READ_MAX = 4096
REOPEN_START_S = 0.5
REOPEN_MAX_S = 5.0
MAX_OUTPUT_BYTES = 65536


class LineSession(Protocol):
    def feed(self, data: bytes, now_ns: int) -> bytes: ...

    def tick(self, now_ns: int) -> bytes: ...

    def hangup(self, now_ns: int, reason: str) -> None: ...

    def flood_started(self) -> None: ...

    def flood_ended(self, discarded: int, now_ns: int) -> bytes: ...


class Port(Protocol):
    """The part of ``serial.Serial`` the server uses (a fake in tests)."""

    @property
    def in_waiting(self) -> int: ...

    def read(self, size: int = 1) -> bytes: ...

    def write(self, data: bytes) -> int | None: ...

    def reset_output_buffer(self) -> None: ...

    def close(self) -> None: ...


def carrier(port: Any) -> bool | None:
    """Whether the other end holds the line up (DCD or DSR); None where the port cannot tell."""
    try:
        return bool(port.cd or port.dsr)
    except Exception:  # a pty (ENOTTY), a fake, a driver without modem lines
        return None


def open_serial(device: str, baud: int) -> Port:
    """Open ``device`` at ``baud`` 8N1, raw, exclusive, no flow control. Raises OSError-like errors."""
    import serial  # pyserial: imported here so a unit without a console never loads it

    port = serial.Serial()
    port.port = device
    port.baudrate = baud
    port.bytesize = serial.EIGHTBITS
    port.parity = serial.PARITY_NONE
    port.stopbits = serial.STOPBITS_ONE
    port.timeout = READ_TIMEOUT_S
    # long enough for a full answer at this baud rate, short enough that a stuck host is noticed
    port.write_timeout = min(30.0, 2.0 + MAX_OUTPUT_BYTES * 10 / baud)
    port.xonxoff = port.rtscts = port.dsrdtr = False
    port.exclusive = True
    port.open()
    port.reset_input_buffer()
    return port  # type: ignore[no-any-return]


def describe(exc: BaseException) -> str:
    err = getattr(exc, "errno", None)
    if err == errno.ENOENT:
        return "no such device"
    if err == errno.EACCES:
        return "permission denied"
    if err == errno.EBUSY or "lock" in str(exc).lower():
        return "busy (another program has it open)"
    return f"{type(exc).__name__}: {exc}"


class ConsoleServer:
    """Serves one session on one serial device, on its own thread.

    ``opener(device, baud)`` returns an open port (pyserial by default). Thread contract:
    ``start`` and ``close`` from any thread; everything else runs on the ``console`` thread.
    """

    def __init__(self, device: str, baud: int, session: LineSession, clock: Clock,
                 opener: Any = open_serial, reopen_start_s: float = REOPEN_START_S,
                 reopen_max_s: float = REOPEN_MAX_S) -> None:
        self.device = device
        self.baud = baud
        self._reopen = (reopen_start_s, reopen_max_s)
        self._session = session
        self._clock = clock
        self._opener = opener
        self._port: Port | None = None
        self._carrier: bool | None = None  # DCD or DSR up; None: the port shows no modem lines
        self._stop = threading.Event()
        self._guard = FloodGuard(parse_per_s=max(4096, baud // 10 * 2))
        self._thread = threading.Thread(target=self._run, name="console", daemon=True)
        self._lock = threading.Lock()
        self._status: dict[str, Any] = {"device": device, "baud": baud, "open": False, "opens": 0,
                                        "last_error": None, "bytes_in": 0, "bytes_out": 0, "discarded": 0}

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def get_status(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._status)

    def _set(self, **values: Any) -> None:
        with self._lock:
            for k, v in values.items():
                self._status[k] = self._status[k] + v if k in ("bytes_in", "bytes_out", "discarded") else v

    # -- the thread ------------------------------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.0
        reported: str | None = None
        while not self._stop.is_set():
            try:
                if self._port is None:
                    self._port = self._opener(self.device, self.baud)
                    self._carrier = carrier(self._port)
                    backoff, reported = 0.0, None
                    self._set(open=True, opens=1 + self._status["opens"], last_error=None)
                    log.info("console: serving %s at %d baud", self.device, self.baud)
                self._serve_once(self._port)
            except Exception as exc:  # the device went away or never came: close, back off, reopen
                reason = describe(exc)
                if reason != reported:
                    log.warning("console: %s: %s; retrying", self.device, reason)
                    reported = reason
                self._drop_port(reason)
                backoff = min(self._reopen[1], max(self._reopen[0], backoff * 2))
                self._stop.wait(backoff)
        self._drop_port("console stopped")

    def _drop_port(self, reason: str) -> None:
        port, self._port = self._port, None
        if port is None:
            return
        self._set(open=False, last_error=reason)
        try:
            self._session.hangup(self._clock.monotonic_ns(), reason)
        except Exception:
            log.exception("console: ending the session")
        try:
            port.close()
        except Exception as exc:
            log.debug("console: closing %s: %s", self.device, exc)

    def _serve_once(self, port: Port) -> None:
        now = self._clock.monotonic_ns()
        pause = self._guard.pause_s(now)
        if pause > 0:
            self._stop.wait(pause)
            return
        data = port.read(1)
        if data:
            waiting = port.in_waiting
            if waiting:
                data += port.read(min(READ_MAX, waiting))
        now = self._clock.monotonic_ns()
        self._watch_carrier(port, now)
        out = b""
        if data:
            self._set(bytes_in=len(data))
            if self._guard.admit(len(data), now):
                out += self._guarded(lambda: self._session.feed(data, now))
            else:
                self._set(discarded=len(data))
                self._session.flood_started()
        discarded = self._guard.ended(now)
        if discarded is not None:
            out += self._guarded(lambda: self._session.flood_ended(discarded, now))
        out += self._guarded(lambda: self._session.tick(now))
        if out:
            self._write(port, out)

    def _watch_carrier(self, port: Port, now_ns: int) -> None:
        """End the login when the other end drops DTR; the port stays open for the next one."""
        if self._carrier is None:
            return  # this port shows no modem lines
        up = carrier(port)
        if self._carrier and up is False:
            log.info("console: %s: the other end dropped the line (DCD/DSR low)", self.device)
            try:
                self._session.hangup(now_ns, "carrier lost")
            except Exception:
                log.exception("console: ending the session")
        self._carrier = up

    def _guarded(self, step: Any) -> bytes:
        """A session step that must not take the line down: its failure is logged, not raised."""
        try:
            result: bytes = step()
            return result
        except Exception:
            log.exception("console: session step failed")
            return b"\r\nerror (internal): the console hit a bug; see the log\r\n"

    def _write(self, port: Port, out: bytes) -> None:
        try:
            port.write(out)
            self._set(bytes_out=len(out))
        except Exception as exc:
            if type(exc).__name__ == "SerialTimeoutException":  # nobody reads: drop the answer, go on
                log.debug("console: write timed out, %d bytes dropped", len(out))
                try:
                    port.reset_output_buffer()
                except Exception as reset_exc:
                    log.debug("console: resetting output: %s", reset_exc)
                return
            raise
