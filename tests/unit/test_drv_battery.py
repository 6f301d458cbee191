"""The MAX17048 register decoding on an emulated gauge, and the sysfs power_supply reader on a fake tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from drivers.battery_max17048 import Max17048, decode
from drivers.battery_sysfs import SysfsBattery
from drivers.i2c_port import I2cError
from hal.common import SensorError
from tests.fakes import FakeClock


class EmulatedGauge:
    def __init__(self, regs: dict[int, int], present: bool = True) -> None:
        self.regs = regs
        self.present = present

    def write(self, address: int, data: bytes) -> None:
        raise AssertionError("the driver never writes to the gauge")

    def write_read(self, address: int, data: bytes, length: int) -> bytes:
        if not self.present or address != 0x36:
            raise I2cError(121, "no ACK")
        return self.regs[data[0]].to_bytes(2, "big")

    def close(self) -> None:
        pass


def test_decode_follows_the_datasheet_units() -> None:
    # 0xD000 * 78.125 uV = 4.16 V; 0x5A80 / 256 = 90.5 %; CRATE -5 * 0.208 = -1.04 %/h
    assert decode(0xD000, 0x5A80, 0xFFFB) == (4.16, 90.5, -1.04)
    assert decode(0xD000, 0x6500, 0x0010, cells=2) == (8.32, 100.0, 3.328), "SOC above 100 % is clamped"


def test_max17048_reads_and_reports_charging_from_the_rate() -> None:
    gauge = EmulatedGauge({0x08: 0x0012, 0x02: 0xC800, 0x04: 0x3200, 0x16: 0x0030})
    with_gauge = Max17048(name="power", clock=FakeClock(), i2c=gauge)
    with_gauge.open()
    status = with_gauge.read()
    assert (status.voltage_v, status.battery_pct, status.charging, status.external_power) == (4.0, 50.0, True, True)
    gauge.regs[0x16] = 0xFFF0
    assert with_gauge.read().charging is False
    assert with_gauge.get_status()["version"] == "0x0012"
    gauge.present = False
    with pytest.raises(SensorError, match="no ACK"):
        with_gauge.read()


def test_max17048_absent_is_a_sensor_error_at_open() -> None:
    with pytest.raises(SensorError, match="no MAX17048"):
        Max17048(name="power", clock=FakeClock(), i2c=EmulatedGauge({}, present=False)).open()


def supply(root: Path, name: str, **attrs: str) -> None:
    (root / name).mkdir(parents=True)
    for key, value in attrs.items():
        (root / name / key).write_text(value + "\n")


def test_sysfs_battery_and_external_power(tmp_path: Path) -> None:
    supply(tmp_path, "AC", type="Mains", online="1")
    supply(tmp_path, "max1726x_battery", type="Battery", capacity="87", status="Charging", voltage_now="4012000",
           temp="312")  # fmt: skip
    bat = SysfsBattery(name="power", clock=FakeClock(), root=str(tmp_path))
    bat.open()
    s = bat.read()
    assert (s.battery_pct, s.charging, s.external_power) == (87.0, True, True)
    assert (s.voltage_v, s.temperature_c) == (4.012, 31.2)
    (tmp_path / "AC" / "online").write_text("0\n")
    (tmp_path / "max1726x_battery" / "status").write_text("Discharging\n")
    s = bat.read()
    assert (s.charging, s.external_power) == (False, False)
    assert "max1726x_battery" in str(bat.get_status()["supply"])


def test_sysfs_without_a_battery(tmp_path: Path) -> None:
    supply(tmp_path, "usb", type="USB", online="1")
    with pytest.raises(SensorError, match="no battery"):
        SysfsBattery(name="power", clock=FakeClock(), root=str(tmp_path)).open()
