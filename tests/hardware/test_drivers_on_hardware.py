"""Each hardware driver on a real unit, staged: open/close, then one sample, then a short recording.

Marked ``hardware``; a driver whose probe says it is unusable here (library missing, device
absent, permission denied) is skipped with that reason, so CI without hardware skips them all.
Run on a unit with ``pytest -m hardware tests/hardware -v``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from drivers.registry import load_all
from drivers.system_clock import SystemClock

pytestmark = pytest.mark.hardware

STREAMING = [("camera", "picamera2"), ("camera", "v4l2"), ("thermal", "lepton-spi"), ("thermal", "purethermal"),
             ("thermal", "mlx90640"), ("microphone", "alsa"), ("gnss", "gpsd"), ("inputs", "gpio")]  # fmt: skip
POLLED = [("power", "max17048"), ("power", "sysfs")]
ALL = STREAMING + POLLED + [("indicators", "gpio")]


def _device(kind: str, name: str) -> Any:
    info = load_all().get(kind, name)
    availability = info.probe()
    if not availability.usable:
        pytest.skip(f"{kind}/{name}: {availability.reason}")
    return load_all().create(kind, name, name=f"hw-{kind}", clock=SystemClock())


@pytest.mark.parametrize(("kind", "name"), ALL)
def test_stage1_open_and_close(kind: str, name: str) -> None:
    device = _device(kind, name)
    device.open()
    assert device.get_status()["open"] is True
    device.close()
    device.close()
    assert device.get_status()["open"] is False


@pytest.mark.parametrize(("kind", "name"), [k for k in STREAMING if k[0] != "inputs"] + POLLED)
def test_stage2_one_sample(kind: str, name: str) -> None:
    device = _device(kind, name)
    device.open()
    try:
        item = device.read() if kind == "power" else device.read(5.0 if kind != "gnss" else 3.0)
    finally:
        device.close()
    assert item is not None, f"{kind}/{name} gave nothing"
    if kind == "thermal":
        celsius = item.data.astype(np.float64) / 100 - 273.15
        assert -40 < float(np.median(celsius)) < 80, "a room should read as a room"
    if kind == "power":
        assert 0 <= item.battery_pct <= 100


@pytest.mark.parametrize(("kind", "name"), [k for k in STREAMING if k[0] in ("camera", "thermal", "microphone")])
def test_stage3_short_recording(kind: str, name: str) -> None:
    device = _device(kind, name)
    device.open()
    items = []
    deadline = time.monotonic() + 3.0
    try:
        while time.monotonic() < deadline:
            item = device.read(1.0)
            if item is not None:
                items.append(item)
    finally:
        device.close()
    assert len(items) >= 3
    indices = [i.index for i in items]
    assert indices == sorted(indices) and len(set(indices)) == len(indices)
    dropped = sum(i.dropped_before for i in items)
    assert dropped <= len(items) // 10, f"{dropped} dropped in 3 s"
    stamps = [i.sensor_ns for i in items]
    assert stamps == sorted(stamps), "sensor timestamps never go backwards"
