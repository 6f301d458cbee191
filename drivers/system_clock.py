"""The host clock: kernel monotonic and real-time clocks, synchronisation read from ``adjtimex``."""

from __future__ import annotations

import ctypes
import logging
import threading
import time

from drivers.pacing import check_name
from drivers.registry import register
from hal.clock import TimeQuality, TimeSource

log = logging.getLogger(__name__)

TIME_ERROR = 5  # adjtimex's return value when the clock is not synchronised
STA_UNSYNC = 0x0040  # status bit: the kernel considers the clock unsynchronised


class _Timex(ctypes.Structure):
    """Linux ``struct timex`` (glibc layout); the trailing padding is part of the ABI."""

    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time_sec", ctypes.c_long),
        ("time_usec", ctypes.c_long),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_reserved", ctypes.c_int * 16),
    ]


def quality_from_adjtimex(result: int, status: int, maxerror_us: int) -> TimeQuality:
    """What an ``adjtimex`` read-out means for the UTC clock (pure, so it can be tested)."""
    if result < 0 or result == TIME_ERROR or status & STA_UNSYNC:
        return TimeQuality(TimeSource.RTC, synced=False)
    uncertainty = maxerror_us * 1000 if maxerror_us >= 0 else None
    return TimeQuality(TimeSource.NTP, synced=True, uncertainty_ns=uncertainty)


@register("clock", "system")
class SystemClock:
    """The host's clocks, as the production agent uses them.

    The kernel keeps UTC in step (chrony, systemd-timesyncd, gpsd via chrony); ``quality``
    asks it whether it is. Thread-safe: the only state is the lazily loaded C library.
    """

    def __init__(self, *, name: str = "system") -> None:
        self.name = check_name(name)
        self._lock = threading.Lock()
        self._adjtimex: ctypes._NamedFuncPointer | None = None
        self._adjtimex_missing = False

    def open(self) -> None:
        """Nothing to acquire; present so the wiring can treat every driver alike."""

    def close(self) -> None:
        """Nothing to release."""

    def monotonic_ns(self) -> int:
        return time.monotonic_ns()

    def utc_ns(self) -> int:
        return time.time_ns()

    def sleep(self, duration_s: float) -> None:
        """Sleep ``duration_s`` seconds; 0 or negative returns at once."""
        if duration_s > 0:
            time.sleep(duration_s)

    def quality(self) -> TimeQuality:
        """NTP-synced when the kernel says so, else an unsynced RTC. Never raises."""
        func = self._load()
        if func is None:
            return TimeQuality(TimeSource.RTC, synced=False)
        timex = _Timex()
        try:
            result = int(func(ctypes.byref(timex)))
        except (OSError, ValueError, ctypes.ArgumentError) as exc:
            log.warning("adjtimex failed: %s", exc)
            return TimeQuality(TimeSource.RTC, synced=False)
        return quality_from_adjtimex(result, timex.status, timex.maxerror)

    def get_status(self) -> dict[str, object]:
        q = self.quality()
        return {
            "name": self.name,
            "source": q.source.value,
            "synced": q.synced,
            "uncertainty_ns": q.uncertainty_ns,
        }

    def _load(self) -> ctypes._NamedFuncPointer | None:
        with self._lock:
            if self._adjtimex is None and not self._adjtimex_missing:
                try:
                    func = ctypes.CDLL(None, use_errno=True).adjtimex
                    func.argtypes = [ctypes.POINTER(_Timex)]
                    func.restype = ctypes.c_int
                    self._adjtimex = func
                except (OSError, AttributeError):
                    log.info("adjtimex unavailable: reporting the clock as unsynced")
                    self._adjtimex_missing = True
            return self._adjtimex
