"""The sim camera's street scene: replayable from a seed, moving, noisy, darker at night, clock burned in."""

from __future__ import annotations

import numpy as np
import pytest

from drivers.registry import DriverError, load_all
from drivers.sim_camera import SimCamera
from tests.fakes import FakeClock

S = 1_000_000_000
W, H = 320, 240


def street(seed: int = 5, light: str = "day", speed: int = 4) -> SimCamera:
    return SimCamera(
        name="cam",
        clock=FakeClock(),
        width=W,
        height=H,
        seed=seed,
        scene="street",
        light=light,
        speed_px_per_frame=speed,
    )


def test_a_frame_is_a_pure_function_of_seed_and_index() -> None:
    a, b = street(seed=5), street(seed=5)
    frames = [a.render(i, i * S // 30) for i in (0, 1, 17)]
    assert all(np.array_equal(f, b.render(i, i * S // 30)) for f, i in zip(frames, (0, 1, 17), strict=True))
    assert np.array_equal(a.render(17, 17 * S // 30), frames[2])  # out of order, the same frame again
    assert not np.array_equal(street(seed=6).render(0, 0), frames[0])
    assert frames[0].shape == (H * 3 // 2, W) and not frames[0].flags.writeable


def test_the_view_pans_and_objects_move() -> None:
    cam = street(speed=0)  # a still background: only the movers and the noise change
    first, later = cam.render(0, 0).astype(np.int16), cam.render(20, 0).astype(np.int16)
    moved = np.abs(later[:H] - first[:H]) > 60  # far beyond the noise
    assert moved[int(H * 0.6) :].any()  # something crossed the pavement or the road
    assert not moved[H // 8 : int(H * 0.3)].any()  # the sky and rooftops (below the clock) stayed put
    panning = street(speed=4)
    assert not np.array_equal(panning.render(0, 0)[: H // 3], panning.render(1, 0)[: H // 3])


def test_consecutive_frames_of_a_static_region_differ_by_sensor_noise() -> None:
    cam = street(speed=0)
    region = (slice(H // 5, H // 3), slice(W // 2, W))  # below the clock, above any mover
    a, b = (cam.render(i, 0)[region].astype(np.float64) for i in (3, 4))
    assert np.var(a - b) > 4  # two independent draws of sigma 2.5 differ with variance about 12
    bars = SimCamera(name="cam", clock=FakeClock(), width=W, height=H, speed_px_per_frame=0)
    assert np.array_equal(bars.render(3, 0)[region], bars.render(4, 0)[region])  # the test pattern is clean


def test_night_is_darker_flatter_and_noisier_than_day() -> None:
    day, night = street(light="day", speed=0), street(light="night", speed=0)
    d0, n0 = day.render(0, 0)[:H].astype(np.float64), night.render(0, 0)[:H].astype(np.float64)
    assert n0.mean() < d0.mean() - 30
    assert n0.std() < d0.std()  # lower contrast
    region = (slice(H // 5, H // 3), slice(W // 2, W))
    noise = [np.var(c.render(3, 0)[region].astype(np.float64) - c.render(4, 0)[region]) for c in (day, night)]
    assert noise[1] > 2 * noise[0]


def test_the_clock_is_burned_in_over_the_street() -> None:
    cam = street(speed=0)
    base, later = cam.render(5, 0), cam.render(5, 3_600 * S)
    rows, cols = np.nonzero(base[:H] != later[:H])
    assert rows.size > 0 and rows.max() < H // 8 and cols.max() < W * 3 // 4
    # the box itself is clean: no noise over the digits
    assert np.array_equal(base[2:4, 2 : W // 2], later[2:4, 2 : W // 2])


def test_scene_and_light_options_are_checked() -> None:
    with pytest.raises(ValueError, match="scene: expected one of bars, street, got 'beach'"):
        SimCamera(name="c", clock=FakeClock(), scene="beach")
    with pytest.raises(ValueError, match="light: expected one of day, night"):
        SimCamera(name="c", clock=FakeClock(), scene="street", light="dusk")
    with pytest.raises(ValueError, match="only the street scene"):
        SimCamera(name="c", clock=FakeClock(), light="night")
    cam = load_all().create("camera", "sim", name="c", clock=FakeClock(), width=64, height=48, scene="street")
    assert cam.get_status()["scene"] == "street"
    with pytest.raises(DriverError):
        load_all().create("camera", "sim", name="c", clock=FakeClock(), weather="rain")
