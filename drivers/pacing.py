"""Shared plumbing of the paced (sim and replay) drivers: the real-time schedule, the base device, option checks."""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from hal.clock import Clock
from hal.common import SensorError

_NS_PER_S = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Slot:
    """The item a consumer gets next: its index, the time it was due, and how many were dropped before it."""

    index: int
    due_ns: int
    dropped_before: int = 0


class Pacer:
    """The schedule of a device that produces item i at ``t0 + i / rate`` and holds at most
    ``queue_depth`` undelivered items, dropping the oldest when the consumer falls behind.

    Time comes only from the injected clock, so a fake clock makes it instant and exact.
    ``take`` is for one consumer thread; ``stop`` and ``status`` may be called from any thread.
    """

    def __init__(self, clock: Clock, rate_hz: Fraction, queue_depth: int, limit: int | None = None) -> None:
        if rate_hz <= 0:
            raise ValueError("rate must be positive")
        if queue_depth < 1:
            raise ValueError("queue depth must be at least 1")
        self._clock = clock
        self._rate = rate_hz
        self._depth = queue_depth
        self._limit = limit
        self._lock = threading.Lock()
        self._stopped = False
        self._next = 0
        self._delivered = 0
        self._dropped = 0
        self._deliveries: deque[int] = deque(maxlen=64)
        self._t0 = clock.monotonic_ns()

    @property
    def t0_ns(self) -> int:
        return self._t0

    def due_ns(self, index: int) -> int:
        """When item ``index`` is due: rounded up, so that ``latest_due(due_ns(i)) == i``."""
        num = index * _NS_PER_S * self._rate.denominator
        return self._t0 - (-num // self._rate.numerator)

    def _latest_due(self, now_ns: int) -> int:
        """The highest index due at ``now_ns`` (-1 before the first)."""
        if now_ns < self._t0:
            return -1
        latest = (now_ns - self._t0) * self._rate.numerator // (_NS_PER_S * self._rate.denominator)
        if self._limit is not None:
            latest = min(latest, self._limit - 1)
        return latest

    def end_at(self, index: int) -> None:
        """No item at or after ``index`` will ever be due (the end of a non-looping replay)."""
        with self._lock:
            self._limit = index if self._limit is None else min(self._limit, index)

    def stop(self) -> None:
        """Make a ``take`` that is waiting return None at its next wake-up."""
        with self._lock:
            self._stopped = True

    def _try_take(self, now_ns: int) -> Slot | None:
        with self._lock:
            latest = self._latest_due(now_ns)
            backlog = latest - self._next + 1
            if backlog <= 0:
                return None
            dropped = max(0, backlog - self._depth)
            index = self._next + dropped
            self._next = index + 1
            self._dropped += dropped
            self._delivered += 1
            self._deliveries.append(now_ns)
            return Slot(index, self.due_ns(index), dropped)

    def take(self, timeout_s: float) -> Slot | None:
        """The next due item, sleeping on the clock until it is due if that is within ``timeout_s``.

        A timeout of 0 or less polls. Returns None after sleeping the whole timeout when nothing
        becomes due, or when stopped.
        """
        timeout_ns = round(timeout_s * _NS_PER_S) if timeout_s > 0 and math.isfinite(timeout_s) else 0
        deadline = self._clock.monotonic_ns() + timeout_ns
        while True:
            now = self._clock.monotonic_ns()
            slot = self._try_take(now)
            if slot is not None or now >= deadline:
                return slot
            with self._lock:
                if self._stopped:
                    return None
                ends = self._limit is not None and self._next >= self._limit
                wake = deadline if ends else min(deadline, self.due_ns(self._next))
            self._clock.sleep(max(1, wake - now) / _NS_PER_S)  # never a zero sleep: no busy loop

    def get_status(self) -> dict[str, object]:
        with self._lock:
            times = list(self._deliveries)
            delivered, dropped = self._delivered, self._dropped
        achieved = None
        if len(times) >= 2 and times[-1] > times[0]:
            achieved = round((len(times) - 1) * _NS_PER_S / (times[-1] - times[0]), 3)
        return {
            "delivered": delivered,
            "dropped": dropped,
            "rate_hz": round(float(self._rate), 3),
            "achieved_rate_hz": achieved,
        }


class PacedDevice:
    """The open/close/status life cycle that every paced driver shares.

    Subclasses set ``_rate_hz`` and ``_queue_depth`` (at the latest in ``_open_source``) and
    implement ``_open_source``, ``_close_source`` and ``_status_extra``. ``read`` is for one
    consumer thread; ``open``, ``close`` and ``get_status`` are safe from any thread, and
    ``get_status`` never blocks on a read in progress.
    """

    def __init__(self, *, name: str, clock: Clock, rate_hz: Fraction, queue_depth: int) -> None:
        self.name = check_name(name)
        self._clock = clock
        self._rate_hz = rate_hz
        self._queue_depth = queue_depth
        self._limit: int | None = None
        self._lock = threading.Lock()
        self._pacer: Pacer | None = None
        self._last_pacer: Pacer | None = None  # kept after close, so the counts stay visible
        self._last_error: str | None = None

    def open(self) -> None:
        """Acquire the source and start the schedule; opening an open device does nothing."""
        with self._lock:
            if self._pacer is not None:
                return
            try:
                self._open_source()
            except SensorError as exc:
                self._last_error = str(exc)
                raise
            self._pacer = self._last_pacer = Pacer(self._clock, self._rate_hz, self._queue_depth, self._limit)

    def close(self) -> None:
        """Release the source; idempotent. A read waiting in another thread returns None."""
        with self._lock:
            pacer, self._pacer = self._pacer, None
            if pacer is None:
                return
            pacer.stop()
            self._close_source()

    def get_status(self) -> dict[str, object]:
        pacer = self._last_pacer
        status: dict[str, object] = {"name": self.name, "open": self._pacer is not None}
        if pacer is not None:
            status.update(pacer.get_status())
        else:
            status.update({"delivered": 0, "dropped": 0, "rate_hz": round(float(self._rate_hz), 3)})
            status["achieved_rate_hz"] = None
        status["last_error"] = self._last_error
        status.update(self._status_extra())
        return status

    def __enter__(self) -> PacedDevice:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _next_slot(self, timeout_s: float) -> Slot | None:
        pacer = self._pacer
        if pacer is None:
            raise SensorError(f"{self.name}: read while closed")
        return pacer.take(timeout_s)

    def _open_source(self) -> None:
        """Acquire whatever the driver reads from; raise SensorError on failure."""

    def _close_source(self) -> None:
        """Release it; called once per open."""

    def _status_extra(self) -> dict[str, object]:
        return {}

    def _fail(self, message: str) -> SensorError:
        """Record ``message`` as the last error and return the exception to raise."""
        self._last_error = message
        return SensorError(f"{self.name}: {message}")


def check_name(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"name: expected a non-empty string, got {value!r}")
    return value


def check_int(option: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{option}: expected an integer in [{low}, {high}], got {value!r}")
    return value


def check_float(option: str, value: object, low: float, high: float) -> float:
    number = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan
    if not math.isfinite(number) or not low <= number <= high:
        raise ValueError(f"{option}: expected a number in [{low}, {high}], got {value!r}")
    return number


def check_bool(option: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{option}: expected true or false, got {value!r}")
    return value


def check_path(option: str, value: object) -> Path:
    if isinstance(value, Path):
        return value
    if not isinstance(value, str) or not value:
        raise ValueError(f"{option}: expected a file path, got {value!r}")
    return Path(value)


def rate_fraction(rate_hz: float) -> Fraction:
    """A rate as an exact fraction (29.97 becomes 2997/100), so that schedules do not drift."""
    return Fraction(rate_hz).limit_denominator(1001)
