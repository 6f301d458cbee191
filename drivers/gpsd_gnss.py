"""A GNSS receiver through gpsd: position, accuracy and UTC time with its quality, over gpsd's JSON socket."""

from __future__ import annotations

import contextlib
import errno
import logging
import select
import socket
import threading
import time

from drivers import gpsd_reports
from drivers.pacing import check_float, check_int, check_name
from drivers.registry import register
from hal.clock import Clock, TimeQuality, TimeSource
from hal.common import Availability, SensorError
from hal.gnss import FixMode, GnssFix

log = logging.getLogger(__name__)

WATCH = b'?WATCH={"enable":true,"json":true}\n'
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 2947
_MAX_LINE = 65536  # SKY reports with many satellites run to a few kB; more is not gpsd


@register("gnss", "gpsd")
class GpsdGnss:
    """A GNSS receiver through gpsd: position, accuracy, and UTC time with its quality.

    Reads gpsd's reports over its socket and turns each TPV into a :class:`GnssFix`.

    No vendor library: gpsd-py3 keeps its connection in module globals and raises "GPS not
    active" before the first fix, gpsdclient's generator dies on a socket timeout, and
    neither lets ``read(timeout_s)`` wait a bounded time. gpsd's JSON protocol is small and
    stable, so this driver speaks it (see :mod:`drivers.gpsd_reports` for the decoding).

    When gpsd goes away, ``read`` raises SensorError; the sensor worker then closes and
    reopens with backoff, and the fault and recovery land in the evidence chain. ``read`` is
    for one consumer thread; ``open``, ``close``, ``get_status`` and ``time_quality`` are safe
    from any thread, and ``close`` wakes a waiting ``read``.
    """

    def __init__(
        self,
        *,
        name: str,
        clock: Clock,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        connect_timeout_s: float = 2.0,
        gst_hold_s: float = 0.3,
    ) -> None:
        self.name = check_name(name)
        self._clock = clock
        if not isinstance(host, str) or not host:
            raise ValueError(f"host: expected a host name or address, got {host!r}")
        self._host = host
        self._port = check_int("port", port, 1, 65535)
        self._connect_timeout_s = check_float("connect_timeout_s", connect_timeout_s, 0.1, 60.0)
        self._hold_ns = round(check_float("gst_hold_s", gst_hold_s, 0.0, 2.0) * 1e9)
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._buffer = b""
        self._assembler = gpsd_reports.EpochAssembler(self._hold_ns)
        self._ready: list[gpsd_reports.Report] = []
        self._opened_ns = 0
        self._first_fix_ns: int | None = None
        self._had_fix = False
        self._fix_losses = 0
        self._reports = 0
        self._bad_lines = 0
        self._last_fix: GnssFix | None = None
        self._quality = TimeQuality(TimeSource.UNSYNCED, synced=False)
        self._last_error: str | None = None
        self._gpsd_version: str | None = None

    @classmethod
    def probe(cls) -> Availability:
        """Usable when a gpsd answers on the default port and has a receiver attached."""
        try:
            with socket.create_connection((DEFAULT_HOST, DEFAULT_PORT), timeout=0.5) as sock:
                sock.sendall(WATCH)
                sock.settimeout(0.5)
                data = b""
                while b'"DEVICES"' not in data and len(data) < _MAX_LINE:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                    if b'"DEVICES"' in data and b"\n" in data.split(b'"DEVICES"', 1)[1]:
                        break
        except OSError as exc:
            return Availability(False, f"device absent: gpsd not reachable on {DEFAULT_HOST}:{DEFAULT_PORT} "
                                       f"({exc.strerror or exc}); is the gpsd service running?")
        for line in data.splitlines():
            try:
                report = gpsd_reports.parse_line(line)
            except gpsd_reports.ReportError:
                continue
            if report["class"] == "DEVICES" and not report.get("devices"):
                return Availability(False, "device absent: gpsd runs but has no receiver (check DEVICES in "
                                           "/etc/default/gpsd)")
        return Availability(True)

    # --- life cycle ---------------------------------------------------------------------------

    def open(self) -> None:
        """Connect to gpsd and start watching; raise SensorError if it is not there or not gpsd."""
        with self._lock:
            if self._sock is not None:
                return
            try:
                sock = socket.create_connection((self._host, self._port), timeout=self._connect_timeout_s)
            except OSError as exc:
                raise self._fail(f"connecting to gpsd at {self._host}:{self._port}: {exc.strerror or exc}") from exc
            try:
                sock.sendall(WATCH)
                sock.setblocking(False)
            except OSError as exc:
                sock.close()
                raise self._fail(f"sending WATCH to gpsd: {exc.strerror or exc}") from exc
            self._sock = sock
            self._buffer = b""
            self._assembler = gpsd_reports.EpochAssembler(self._hold_ns)
            self._ready = []
            self._gpsd_version = None
            self._opened_ns = self._clock.monotonic_ns()
            self._first_fix_ns = None
            self._had_fix = False
        log.info("%s: connected to gpsd at %s:%d", self.name, self._host, self._port)

    def close(self) -> None:
        """Disconnect; idempotent. A read waiting in another thread raises SensorError."""
        with self._lock:
            sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a select() in another thread
            sock.close()

    def __enter__(self) -> GpsdGnss:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reading ------------------------------------------------------------------------------

    def read(self, timeout_s: float) -> GnssFix | None:
        """The next report (fix or no-fix), waiting up to ``timeout_s`` seconds (0 or less polls).

        Returns None on timeout. Raises SensorError when closed, or when gpsd closes the
        connection or sends garbage that is not line-delimited JSON.
        """
        deadline = time.monotonic() + (timeout_s if timeout_s > 0 else 0.0)
        while True:
            if self._ready:
                return self._deliver(self._ready.pop(0))
            sock = self._sock
            if sock is None:
                raise SensorError(f"{self.name}: read while closed")
            self._drain_lines()
            if self._ready:
                continue
            mono_ns = self._clock.monotonic_ns()
            if self._assembler.due(mono_ns):
                self._ready += self._assembler.flush()
                continue
            wait_s = max(0.0, deadline - time.monotonic())
            hold_ns = self._assembler.hold_left_ns(mono_ns)
            if hold_ns is not None:
                wait_s = min(wait_s, hold_ns / 1e9)
            if not self._receive(sock, wait_s) and time.monotonic() >= deadline:
                if self._assembler.due(self._clock.monotonic_ns()):
                    self._ready += self._assembler.flush()
                    continue
                return None

    def _receive(self, sock: socket.socket, wait_s: float) -> bool:
        """Wait up to ``wait_s`` for data and append it to the buffer; False when none came."""
        try:
            readable, _, _ = select.select([sock], [], [], max(0.0, wait_s))
        except (OSError, ValueError) as exc:  # ValueError: closed by close() in another thread
            raise self._fail(f"waiting for gpsd: {exc}") from exc
        if not readable:
            return False
        try:
            chunk = sock.recv(65536)
        except BlockingIOError:
            return False
        except OSError as exc:
            if self._sock is None:
                raise SensorError(f"{self.name}: closed while reading") from exc
            if exc.errno in (errno.EAGAIN, errno.EINTR):
                return False
            raise self._fail(f"reading from gpsd: {exc.strerror or exc}") from exc
        if not chunk:
            if self._sock is None:
                raise SensorError(f"{self.name}: closed while reading")
            raise self._fail("gpsd closed the connection (gpsd stopped or restarted)")
        self._buffer += chunk
        if len(self._buffer) > _MAX_LINE and b"\n" not in self._buffer:
            raise self._fail(f"no line end in {len(self._buffer)} bytes: not gpsd")
        return True

    def _drain_lines(self) -> None:
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            if not line.strip():
                continue
            now = self._clock.monotonic_ns()
            try:
                report = gpsd_reports.parse_line(line)
            except gpsd_reports.ReportError as exc:
                self._bad_lines += 1
                if self._gpsd_version is None:
                    raise self._fail(f"{self._host}:{self._port} is not gpsd ({exc})") from None
                log.warning("%s: skipping bad line from gpsd: %s", self.name, exc)
                continue
            self._reports += 1
            if report["class"] == "VERSION":
                self._gpsd_version = str(report.get("release", "?"))
            elif report["class"] == "ERROR":
                log.warning("%s: gpsd says: %s", self.name, report.get("message"))
            self._ready += self._assembler.feed(report, now)

    def _deliver(self, report: gpsd_reports.Report) -> GnssFix:
        fix = report.fix
        has_fix = fix.mode is not FixMode.NO_FIX
        with self._lock:
            if has_fix and self._first_fix_ns is None:
                self._first_fix_ns = fix.mono_ns
                log.info("%s: first fix after %.1f s", self.name, (fix.mono_ns - self._opened_ns) / 1e9)
            if self._had_fix and not has_fix:
                self._fix_losses += 1
                log.info("%s: fix lost", self.name)
            self._had_fix = has_fix
            self._last_fix = fix
            self._quality = report.time_quality
        return fix

    # --- status -------------------------------------------------------------------------------

    def time_quality(self) -> TimeQuality:
        """The quality of the UTC in the last report (UNSYNCED before any)."""
        with self._lock:
            return self._quality

    def get_status(self) -> dict[str, object]:
        with self._lock:
            fix, q = self._last_fix, self._quality
            first = self._first_fix_ns
            return {
                "name": self.name,
                "driver": "gpsd",
                "open": self._sock is not None,
                "gpsd": f"{self._host}:{self._port}",
                "gpsd_version": self._gpsd_version,
                "receivers": list(self._assembler.devices),
                "mode": fix.mode.name if fix else None,
                "time_to_first_fix_s": round((first - self._opened_ns) / 1e9, 3) if first is not None else None,
                "fix_losses": self._fix_losses,
                "reports": self._reports,
                "bad_lines": self._bad_lines,
                "time_source": q.source.value,
                "time_synced": q.synced,
                "time_uncertainty_ns": q.uncertainty_ns,
                "last_error": self._last_error,
            }

    def _fail(self, message: str) -> SensorError:
        self._last_error = message
        return SensorError(f"{self.name}: {message}")

