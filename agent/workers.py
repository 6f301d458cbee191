"""Sensor worker threads: read a device, hand what it gives to a handler, restart it when it fails.

One thread per sensor, so a sensor that hangs or raises never holds up another. A failing
device is closed and reopened with exponential backoff; the fault and the recovery are
reported through callbacks (the recorder turns them into signed chain events).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

from agent.backoff import Backoff
from hal.clock import Clock
from hal.common import SensorError

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 0.25
BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 30.0
REOPEN_BACKOFF = Backoff(BACKOFF_START_S, BACKOFF_MAX_S)


class Readable(Protocol):
    name: str

    def open(self) -> None: ...

    def close(self) -> None: ...

    def read(self, timeout_s: float) -> Any: ...

    def get_status(self) -> dict[str, object]: ...


def next_backoff(previous_s: float) -> float:
    """Pure: the wait before the next reopen attempt."""
    return REOPEN_BACKOFF.after(previous_s)


class SensorWorker:
    """Drives one device on its own thread. ``handle`` runs on that thread for every item.

    ``on_fault(sensor, error)`` and ``on_recovered(sensor)`` are called on transitions only.
    Thread contract: ``start``/``stop``/``get_status`` from any thread.
    """

    def __init__(
        self,
        sensor: str,
        device: Readable,
        handle: Callable[[Any], None],
        clock: Clock,
        on_fault: Callable[[str, str], None] = lambda s, e: None,
        on_recovered: Callable[[str], None] = lambda s: None,
        stall_s: float | None = None,
    ) -> None:
        """``stall_s``: a device that delivers nothing for this long is treated as failed and
        reopened (None: never, for sensors that are legitimately quiet, like buttons)."""
        self.sensor = sensor
        self.handle = handle
        self.on_fault = on_fault
        self.on_recovered = on_recovered
        self.stall_s = stall_s
        self.abandoned = False
        self._device = device
        self._stall_ns = None if stall_s is None else round(stall_s * 1e9)
        self.last_progress_ns = clock.monotonic_ns()
        self._handle = handle
        self._clock = clock
        self._on_fault = on_fault
        self._on_recovered = on_recovered
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sensor-{sensor}", daemon=True)
        self._lock = threading.Lock()
        self._state = "starting"
        self._items = 0
        self._restarts = 0
        self._last_error: str | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)

    def abandon(self) -> None:
        """Give up on a thread stuck inside its device: it exits as soon as the call returns."""
        self.abandoned = True
        self._stop.set()
        self._set("abandoned", "hung inside a device call")

    def get_status(self) -> dict[str, object]:
        """The thread's state, items handled, restarts and last error, and the device's own status."""
        with self._lock:
            own: dict[str, object] = {
                "state": self._state,
                "items": self._items,
                "restarts": self._restarts,
                "last_error": self._last_error,
            }
        try:
            own["device"] = self._device.get_status()
        except Exception as exc:  # a status getter must never break the status page
            own["device"] = {"error": str(exc)}
        return own

    status = get_status  # the old name, kept until every caller says get_status

    def _set(self, state: str, error: str | None = None) -> None:
        with self._lock:
            self._state = state
            if error is not None:
                self._last_error = error

    def _run(self) -> None:
        backoff = 0.0
        faulted = False
        while not self._stop.is_set():
            try:
                self._device.open()
            except Exception as exc:
                backoff = next_backoff(backoff)
                msg = f"open failed: {exc}"
                self._set("failed", msg)
                if not faulted:
                    faulted = True
                    log.error("%s: %s; retrying in %.1f s", self.sensor, msg, backoff)
                    self._on_fault(self.sensor, msg)
                self._stop.wait(backoff)
                continue
            self.last_progress_ns = self._clock.monotonic_ns()
            if faulted:
                faulted = False
                with self._lock:
                    self._restarts += 1
                log.info("%s: recovered", self.sensor)
                self._on_recovered(self.sensor)
            self._set("running")
            backoff = 0.0
            try:
                self._loop()
            except Exception as exc:
                msg = f"{type(exc).__name__}: {exc}"
                self._set("failed", msg)
                faulted = True
                log.error("%s failed: %s", self.sensor, msg)
                self._on_fault(self.sensor, msg)
                backoff = next_backoff(backoff)
                self._stop.wait(backoff)
            finally:
                try:
                    self._device.close()
                except Exception as exc:
                    log.warning("%s: close failed: %s", self.sensor, exc)
        self._set("stopped")

    def _loop(self) -> None:
        last_item = self._clock.monotonic_ns()
        while not self._stop.is_set():
            item = self._device.read(READ_TIMEOUT_S)
            if self._stop.is_set():
                return  # stopped (or abandoned) while blocked: the replacement owns the encoder now
            now = self._clock.monotonic_ns()
            self.last_progress_ns = now
            if item is None:
                if self._stall_ns is not None and now - last_item > self._stall_ns:
                    raise SensorError(f"no data for {(now - last_item) / 1e9:.1f} s (sensor stalled)")
                continue
            last_item = now
            self._handle(item)
            with self._lock:
                self._items += 1

    def stuck_for_ns(self) -> int:
        """How long the thread has been inside one call (a read that never returns, a hung handler)."""
        return self._clock.monotonic_ns() - self.last_progress_ns if self._state == "running" else 0
