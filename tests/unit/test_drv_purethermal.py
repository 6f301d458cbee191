"""PureThermal UVC Y16: the frame layouts OpenCV hands over, telemetry rows, and the driver's read path."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from drivers.purethermal import PureThermal, split_y16
from hal.common import SensorError
from tests.fakes import FakeClock
from tests.unit.test_drv_lepton_vospi import scene, telemetry_words


class FakeCapture:
    """Hands out prepared buffers as ``cv2.VideoCapture.read`` would, then fails (unplugged)."""

    def __init__(self, frames: list[npt.NDArray[Any]]) -> None:
        self._frames = list(frames)
        self.released = False

    def isOpened(self) -> bool:  # noqa: N802
        return True

    def read(self) -> tuple[bool, npt.NDArray[Any] | None]:
        if not self._frames:
            return False, None
        return True, self._frames.pop(0)

    def set(self, prop: int, value: float) -> bool:
        return True

    def get(self, prop: int) -> float:
        return 0.0

    def release(self) -> None:
        self.released = True


def test_y16_as_uint16_or_as_raw_little_endian_bytes() -> None:
    pixels = scene(1)
    as_words, tel = split_y16(pixels)
    np.testing.assert_array_equal(as_words, pixels)
    assert tel is None
    raw_bytes = np.frombuffer(pixels.astype("<u2").tobytes(), dtype=np.uint8).reshape(1, -1)
    np.testing.assert_array_equal(split_y16(raw_bytes)[0], pixels)


def test_y16_with_two_telemetry_rows() -> None:
    tel = telemetry_words(frame_counter=7, fpa_ck=30400)
    extra = np.zeros((2, 160), dtype=np.uint16)
    extra.reshape(-1)[: tel.size] = tel
    pixels, words = split_y16(np.vstack([scene(2), extra]))
    np.testing.assert_array_equal(pixels, scene(2))
    assert words is not None and words[24] == 30400 and words[20] == 7


@pytest.mark.parametrize("shape", [(100, 160), (120, 80)])
def test_y16_of_the_wrong_size_is_refused(shape: tuple[int, int]) -> None:
    with pytest.raises(SensorError, match="Y16 frame of"):
        split_y16(np.zeros(shape, dtype=np.uint16))


def test_driver_reads_centikelvin_frames_and_fails_when_unplugged() -> None:
    tel_rows = np.zeros((2, 160), dtype=np.uint16)
    tel_rows.reshape(-1)[:240] = telemetry_words(frame_counter=1, fpa_ck=30300, uptime_ms=5000)
    frames = [scene(1), np.zeros((7, 7), dtype=np.uint16), np.vstack([scene(3), tel_rows])]
    cap = FakeCapture(frames)
    clock = FakeClock()
    with PureThermal(name="thermal", clock=clock, capture=cap) as cam:
        first = cam.read(1.0)
        assert cam.read(1.0) is None, "a malformed buffer is counted and skipped"
        third = cam.read(1.0)
        with pytest.raises(SensorError, match="unplugged"):
            cam.read(1.0)
        status = cam.get_status()
    assert first is not None and third is not None
    np.testing.assert_array_equal(first.data, scene(1))
    assert (first.index, third.index, first.fpa_temp_ck) == (0, 1, None)
    assert third.fpa_temp_ck == 30300 and third.sensor_ns == 5_000_000_000
    assert status["frames"] == 2 and status["bad_frames"] == 1 and "unplugged" in str(status["last_error"])


def test_coarse_resolution_scales_to_centikelvin() -> None:
    cam = PureThermal(name="t", clock=FakeClock(), resolution_ck=10,
                      capture=FakeCapture([np.full((120, 160), 2950, dtype=np.uint16)]))
    cam.open()
    frame = cam.read(1.0)
    assert frame is not None and int(frame.data.max()) == 29500
    with pytest.raises(ValueError, match="resolution_ck"):
        PureThermal(name="t", clock=FakeClock(), resolution_ck=5)
