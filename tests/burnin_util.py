"""Reading back the clock the simulated camera burns into its frames (drivers/sim_camera.py)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from drivers.sim_camera import SimCamera
from tests.fakes import FakeClock


def camera(width: int, height: int) -> SimCamera:
    """A camera of the unit's size: the same label geometry as the one that drew the frames."""
    return SimCamera(name="chest", clock=FakeClock(), width=width, height=height)


def read_burned_time_ms(cam: SimCamera, box_luma: npt.NDArray[np.uint8], around_ms: int,
                        span_ms: int = 2000) -> tuple[int, float]:
    """The UTC time (ms) whose label best matches ``box_luma`` (the label box read from a frame),
    searched within ``around_ms`` ± ``span_ms``, and how well it matches (mean absolute luma
    difference over the time's pixels; a decoded H.264 frame of the right time stays under ~25)."""
    width = cam.label_time_width(around_ms * 1_000_000)
    seen = box_luma[:, :width].astype(np.int16)
    best, best_err = around_ms, float("inf")
    for ms in range(around_ms - span_ms, around_ms + span_ms + 1):
        drawn = cam.label_luma(0, ms * 1_000_000)[:, :width].astype(np.int16)
        err = float(np.abs(drawn - seen).mean())
        if err < best_err:
            best, best_err = ms, err
    return best, best_err
