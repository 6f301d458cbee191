"""Sensor workers: a driver that raises, stalls, hangs or returns garbage is reopened; faults are reported."""

from __future__ import annotations

import threading
import time
from typing import Any

from agent.workers import SensorWorker, next_backoff
from hal.common import SensorError
from tests.fakes import FakeClock


class ScriptedDevice:
    """A hand-written fake driver: each read follows the script ('item', 'none', 'raise', 'hang')."""

    def __init__(self, script: list[str], open_failures: int = 0) -> None:
        self.name = "fake"
        self.script = list(script)
        self.opens = 0
        self.closes = 0
        self.open_failures = open_failures
        self.release = threading.Event()

    def open(self) -> None:
        self.opens += 1
        if self.open_failures > 0:
            self.open_failures -= 1
            raise SensorError("device absent")

    def close(self) -> None:
        self.closes += 1

    def read(self, timeout_s: float) -> Any:
        step = self.script.pop(0) if self.script else "none"
        if step == "raise":
            raise SensorError("read failed: EIO")
        if step == "hang":
            self.release.wait(10)
            return "late-item"
        if step == "none":
            time.sleep(0.005)
            return None
        return step

    def get_status(self) -> dict[str, object]:
        return {"opens": self.opens}


class Recorded:
    def __init__(self) -> None:
        self.items: list[Any] = []
        self.faults: list[str] = []
        self.recovered = 0

    def handle(self, item: Any) -> None:
        if item == "garbage":
            raise ValueError("frame of the wrong shape")
        self.items.append(item)


def wait_for(cond: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def run_worker(device: ScriptedDevice, rec: Recorded, stall_s: float | None = None) -> SensorWorker:
    w = SensorWorker(
        "cam",
        device,
        rec.handle,
        FakeClock(),
        on_fault=lambda s, e: rec.faults.append(e),
        on_recovered=lambda s: setattr(rec, "recovered", rec.recovered + 1),
        stall_s=stall_s,
    )
    w.start()
    return w


def test_a_read_that_raises_is_reported_and_the_device_reopened() -> None:
    dev, rec = ScriptedDevice(["a", "b", "raise", "c"]), Recorded()
    w = run_worker(dev, rec)
    wait_for(lambda: "c" in rec.items)
    w.stop()
    assert rec.items == ["a", "b", "c"]
    assert len(rec.faults) == 1 and "EIO" in rec.faults[0]
    assert rec.recovered == 1 and dev.opens == 2 and dev.closes == 2
    assert w.status()["restarts"] == 1


def test_garbage_from_the_driver_is_a_fault_not_a_crash() -> None:
    dev, rec = ScriptedDevice(["a", "garbage", "b"]), Recorded()
    w = run_worker(dev, rec)
    wait_for(lambda: "b" in rec.items)
    w.stop()
    assert rec.items == ["a", "b"] and "wrong shape" in rec.faults[0]


def test_a_stalled_sensor_is_reopened() -> None:
    dev, rec = ScriptedDevice(["a"] + ["none"] * 2000), Recorded()
    clock = FakeClock()
    w = SensorWorker("cam", dev, rec.handle, clock, on_fault=lambda s, e: rec.faults.append(e), stall_s=2.0)
    w.start()
    wait_for(lambda: rec.items == ["a"])
    clock.advance(3.0)  # the device has said nothing for 3 s of its clock
    wait_for(lambda: bool(rec.faults))
    wait_for(lambda: dev.opens >= 2)  # reopened after the backoff
    w.stop()
    assert "stalled" in rec.faults[0]


def test_an_absent_device_is_retried_with_backoff_and_reported_once() -> None:
    dev, rec = ScriptedDevice(["a"], open_failures=2), Recorded()
    w = run_worker(dev, rec)
    wait_for(lambda: rec.items == ["a"], timeout_s=8)
    w.stop()
    assert len(rec.faults) == 1 and "device absent" in rec.faults[0]
    assert dev.opens == 3 and rec.recovered == 1


def test_a_thread_hung_inside_the_driver_is_visible_and_can_be_abandoned() -> None:
    dev, rec = ScriptedDevice(["a", "hang"]), Recorded()
    clock = FakeClock()
    w = SensorWorker("cam", dev, rec.handle, clock)
    w.start()
    wait_for(lambda: rec.items == ["a"])
    time.sleep(0.05)
    clock.advance(12.0)
    assert w.stuck_for_ns() >= 12 * 10**9
    w.abandon()
    dev.release.set()  # the driver call finally returns...
    w.stop()
    assert rec.items == ["a"]  # ...and the abandoned thread does not touch the encoder any more
    assert w.status()["state"] in ("abandoned", "stopped")


def test_backoff_doubles_to_a_cap() -> None:
    b, seen = 0.0, []
    for _ in range(10):
        b = next_backoff(b)
        seen.append(b)
    assert seen[0] == 0.5 and seen[1] == 1.0 and seen[-1] == 30.0
