"""MLX90640 calibration maths against the datasheet's worked example and Melexis' example data set,
and the I2C driver against an emulated sensor serving that data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from drivers import mlx90640_calib as m
from drivers.mlx90640 import Mlx90640, fill_failed
from hal.common import SensorError
from tests.fakes import FakeClock

EXAMPLE: dict[str, Any] = json.loads((Path(__file__).parent / "data" / "mlx90640_melexis_example.json").read_text())

# The datasheet's worked example (section 11.2): its EEPROM words 0x2410-0x243F, every pixel word
# 0x08A0, and the RAM words it lists; the pixel it follows is (row 12, column 16).
DATASHEET_HEADER = (
    "4210ffbb0202f202f2f2e2e2d1e1b1d1" "f10ff00fe0efe0efe1e1f3f2f404e504"
    "79a62f44ffdd221033332233ef019acc" "eedc10ff2221333323330112eeffbbdd"
    "18ef2ff159529d685454099469565354" "2363e446fbb5044bf020979797972889"
)  # fmt: skip
PIXEL_12_16 = 11 * 32 + 15


def datasheet_eeprom() -> list[int]:
    header = [int(DATASHEET_HEADER[i : i + 4], 16) for i in range(0, len(DATASHEET_HEADER), 4)]
    return [0] * 16 + header + [0x08A0] * (m.EEPROM_WORDS - 64)


def datasheet_ram() -> list[int]:
    ram = [0x0261] * m.PIXELS + [0] * (m.RAM_WORDS - m.PIXELS)
    for index, value in ((m.RAM_TA_VBE, 0x4BF2), (m.RAM_CP_SP0, 0xFFCA), (m.RAM_GAIN, 0x1881),
                         (m.RAM_TA_PTAT, 0x06AF), (m.RAM_CP_SP1, 0xFFC8), (m.RAM_VDD_PIX, 0xCCC5)):  # fmt: skip
        ram[index] = value
    return ram


def test_datasheet_example_supply_and_ambient_parameters() -> None:
    cal = m.extract(datasheet_eeprom())
    assert (cal.kvdd, cal.vdd25) == (-3168, -13056)
    assert cal.kv_ptat == pytest.approx(0.005371, abs=1e-6) and cal.kt_ptat == 42.25
    assert (cal.vptat25, cal.alpha_ptat, cal.gain_ee) == (12273, 9.0, 6383)
    ram = np.array(datasheet_ram())
    vdd = m.supply_voltage(cal, ram, 0x1901)
    assert vdd == pytest.approx(3.3 + 59 / 3168)  # (-13115 - -13056) / -3168 + 3.3
    assert m.ambient_temperature(cal, ram, vdd) == pytest.approx(39.184, abs=0.001)


def test_datasheet_example_pixel_12_16() -> None:
    cal = m.extract(datasheet_eeprom())
    assert cal.offset_ref[PIXEL_12_16] == -75
    assert cal.alpha[PIXEL_12_16] == pytest.approx(1.262233e-7, rel=1e-6)
    assert cal.kta[PIXEL_12_16] == pytest.approx(0.005126953, rel=1e-6)
    assert cal.kv[PIXEL_12_16] == 0.5
    assert cal.offset_cp == (-75, -77) and cal.tgc == 1.0
    result = m.temperatures(cal, datasheet_ram(), 0, 0x1901)
    assert result.ta_c == pytest.approx(39.184, abs=0.001)
    # The datasheet states 80.36 degC, its figures rounded at every step; computed exactly the
    # same chain gives 80.22 (another independent implementation lands at the same place).
    assert result.to_c[PIXEL_12_16] == pytest.approx(80.36, abs=0.2)
    assert np.isnan(result.to_c[PIXEL_12_16 + 1]), "the neighbour is measured in subpage 1"


def test_melexis_example_parameters_match_exactly() -> None:
    cal = m.extract(EXAMPLE["eeprom"])
    p = EXAMPLE["params"]
    assert (cal.kvdd, cal.vdd25, cal.vptat25, cal.gain_ee, cal.resolution_ee) == (
        p["kvdd"], p["vdd25"], p["vptat25"], p["gain_ee"], p["resolution_ee"])
    for ours, theirs in ((cal.kv_ptat, p["kv_ptat"]), (cal.kt_ptat, p["kt_ptat"]), (cal.alpha_ptat, p["alpha_ptat"]),
                         (cal.kv_cp, p["kv_cp"]), (cal.kta_cp, p["kta_cp"]), (cal.ks_ta, p["ks_ta"])):  # fmt: skip
        assert ours == pytest.approx(theirs, abs=1e-6)
    assert cal.alpha_cp == pytest.approx(tuple(p["alpha_cp"]), rel=1e-9)
    assert list(cal.offset_cp) == p["offset_cp"] and list(cal.corner_temps_c) == p["corner_temps_c"]
    assert cal.ks_to == pytest.approx(tuple(p["ks_to"]), abs=1e-6)
    np.testing.assert_array_equal(cal.offset_ref, EXAMPLE["offset_ref"])
    np.testing.assert_allclose(cal.alpha, EXAMPLE["alpha"], rtol=1e-9)
    np.testing.assert_allclose(cal.kta, EXAMPLE["kta"], atol=1e-8)
    np.testing.assert_allclose(cal.kv, EXAMPLE["kv"], atol=0)
    assert cal.broken_pixels == () and cal.outlier_pixels == ()


def test_melexis_example_temperatures_of_all_768_pixels() -> None:
    cal = m.extract(EXAMPLE["eeprom"])
    sp0 = m.temperatures(cal, EXAMPLE["frame0_ram"], EXAMPLE["frame0_status"] & 1, EXAMPLE["control_register"])
    sp1 = m.temperatures(cal, EXAMPLE["frame1_ram"], EXAMPLE["frame1_status"] & 1, EXAMPLE["control_register"])
    to = np.where(np.isnan(sp0.to_c), sp1.to_c, sp0.to_c)
    assert not np.isnan(to).any(), "the two subpages cover every pixel once"
    np.testing.assert_allclose(to, EXAMPLE["temperatures_c"], atol=0.001)


def test_resolution_correction_and_failed_pixels() -> None:
    cal = m.extract(EXAMPLE["eeprom"])
    assert m.resolution_correction(cal, 0x1901) == 1.0  # both at 18 bits
    assert m.resolution_correction(cal, 0x1901 & ~0x0C00) == 4.0  # ADC at 16 bits
    ee = list(EXAMPLE["eeprom"])
    ee[0x40 + 5] = 0  # a failed pixel
    ee[0x40 + 6] |= 1  # an outlier
    cal = m.extract(ee)
    assert cal.broken_pixels == (5,) and cal.outlier_pixels == (6,)
    for i in range(7, 12):
        ee[0x40 + i] = 0
    with pytest.raises(m.CalibrationError, match="more than the 4 allowed"):
        m.extract(ee)
    with pytest.raises(m.CalibrationError, match="832 EEPROM words"):
        m.extract(ee[:100])


def test_failed_pixels_take_their_neighbours_mean() -> None:
    to = np.full(768, 30.0)
    to[33] = np.nan
    to[32] = 20.0
    grid = fill_failed(to)
    assert grid[1, 1] == pytest.approx((30 + 30 + 20 + 30) / 4)


class EmulatedMlx90640:
    """The sensor's I2C memory map: EEPROM, RAM, status and control registers; new data on each poll."""

    def __init__(self, eeprom: list[int], frames: list[tuple[list[int], int]]) -> None:
        self.mem: dict[int, int] = {0x2400 + i: w for i, w in enumerate(eeprom)}
        self.mem[0x800D] = 0x1901
        self.mem[0x8000] = 0
        self._frames = list(frames)
        self.writes: list[tuple[int, int]] = []

    def write(self, address: int, data: bytes) -> None:
        reg, value = int.from_bytes(data[:2], "big"), int.from_bytes(data[2:4], "big")
        self.writes.append((reg, value))
        self.mem[reg] = value

    def write_read(self, address: int, data: bytes, length: int) -> bytes:
        reg = int.from_bytes(data[:2], "big")
        if reg == 0x8000 and not self.mem[0x8000] & 0x8 and self._frames:
            ram, subpage = self._frames.pop(0)
            self.mem.update({0x0400 + i: w for i, w in enumerate(ram)})
            self.mem[0x8000] = 0x8 | subpage
        return b"".join(self.mem.get(reg + i, 0).to_bytes(2, "big") for i in range(length // 2))

    def close(self) -> None:
        pass


def test_driver_reads_eeprom_sets_chess_mode_and_emits_a_frame_per_two_subpages() -> None:
    frames = [(EXAMPLE["frame0_ram"], 0), (EXAMPLE["frame1_ram"], 1)]
    sensor = EmulatedMlx90640(EXAMPLE["eeprom"], frames)
    clock = FakeClock()
    with Mlx90640(name="thermal", clock=clock, refresh_hz=4.0, i2c=sensor) as cam:
        control = sensor.mem[0x800D]
        assert control & 0x1000 and (control >> 7) & 0x7 == 3, "chess mode, 4 Hz"
        frame = cam.read(1.0)
        assert cam.read(0.05) is None
        status = cam.get_status()
    assert frame is not None and (frame.width, frame.height, frame.index) == (32, 24, 0)
    expected = np.rint((np.array(EXAMPLE["temperatures_c"]) + 273.15) * 100).reshape(24, 32)
    assert np.max(np.abs(frame.data.astype(np.int64) - expected)) <= 1, "centikelvin, within rounding"
    assert frame.fpa_temp_ck is not None and 30000 < frame.fpa_temp_ck < 31000
    assert (0x8000, 0x0000) in sensor.writes, "new-data flag cleared after each subpage"
    assert status["subpages"] == 2 and status["frames"] == 1 and cam.rate_hz == 2.0


def test_driver_options_and_a_bad_eeprom() -> None:
    with pytest.raises(ValueError, match="refresh_hz"):
        Mlx90640(name="t", clock=FakeClock(), refresh_hz=3.0)
    broken = [0] * m.EEPROM_WORDS
    cam = Mlx90640(name="t", clock=FakeClock(), i2c=EmulatedMlx90640(broken, []))
    with pytest.raises(SensorError, match="failed"):
        cam.open()
