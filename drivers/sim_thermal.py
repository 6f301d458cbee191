"""A simulated radiometric thermal camera (Lepton 3.5 class): a 20 °C room with a warm body walking across."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from drivers.pacing import PacedDevice, check_float, check_int, rate_fraction
from drivers.registry import register
from hal.clock import Clock
from hal.thermal import ThermalFrame

ZERO_C_CK = 27315  # 0 °C in centikelvin
_SENSOR_EPOCH_NS = 3_000_000_000


def _body_ck(height: int) -> npt.NDArray[np.float32]:
    """A standing person seen from the front, in centikelvin above the background: head warmest."""
    body_h = max(8, height * 3 // 5)
    body_w = max(4, body_h // 3)
    yy, xx = np.mgrid[0:body_h, 0:body_w].astype(np.float32)
    cx = (body_w - 1) / 2
    excess = np.zeros((body_h, body_w), dtype=np.float32)
    head_r = body_w / 4
    head = (xx - cx) ** 2 + (yy - head_r) ** 2 <= head_r**2
    torso = (np.abs(xx - cx) <= body_w / 2) & (yy > 2 * head_r) & (yy < body_h * 0.6)
    legs = (np.abs(np.abs(xx - cx) - body_w / 5) <= body_w / 8) & (yy >= body_h * 0.6)
    excess[legs] = 0.7
    excess[torso] = 0.85
    excess[head] = 1.0  # skin; clothing shows cooler
    return excess


@register("thermal", "sim")
class SimThermal(PacedDevice):
    """A deterministic stand-in for the radiometric thermal core.

    Frame i depends only on i and the seed (noise comes from a generator seeded with both),
    so dropped frames cost nothing and replays are exact. ``read`` is for one consumer thread.
    """

    def __init__(
        self,
        *,
        name: str,
        clock: Clock,
        width: int = 160,
        height: int = 120,
        rate_hz: float = 8.7,
        seed: int = 0,
        background_c: float = 20.0,
        body_c: float = 34.0,
        noise_ck: float = 5.0,
        walk_period_s: float = 12.0,
        queue_frames: int = 4,
        fail_after_s: float = 0.0,
    ) -> None:
        """``fail_after_s`` > 0 injects one read failure that long after the first open, so tests
        and the hardware-in-the-loop suite can watch the supervisor reopen a failing sensor."""
        rate = rate_fraction(check_float("rate_hz", rate_hz, 0.1, 100.0))
        super().__init__(
            name=name, clock=clock, rate_hz=rate, queue_depth=check_int("queue_frames", queue_frames, 1, 64)
        )
        self._fail_after_ns = round(check_float("fail_after_s", fail_after_s, 0.0, 86400.0) * 1e9)
        self._first_open_ns: int | None = None
        self._failed_once = False
        self._last_index = 0
        self._width = check_int("width", width, 16, 1024)
        self._height = check_int("height", height, 16, 1024)
        self._seed = check_int("seed", seed, 0, 2**32 - 1)
        self._background_ck = ZERO_C_CK + 100 * check_float("background_c", background_c, -40.0, 120.0)
        self._body_ck = ZERO_C_CK + 100 * check_float("body_c", body_c, -40.0, 400.0)
        self._noise_ck = check_float("noise_ck", noise_ck, 0.0, 500.0)
        self._walk_period_s = check_float("walk_period_s", walk_period_s, 0.5, 3600.0)
        ramp = np.linspace(-30.0, 30.0, self._height, dtype=np.float32)[:, np.newaxis]  # floor vs ceiling
        self._background = np.broadcast_to(self._background_ck + ramp, (self._height, self._width)).copy()
        self._body = _body_ck(self._height)

    @property
    def width(self) -> int:
        return self._width

    @property
    def height(self) -> int:
        return self._height

    @property
    def rate_hz(self) -> float:
        return float(self._rate_hz)

    def read(self, timeout_s: float) -> ThermalFrame | None:
        """The next frame, waiting up to ``timeout_s`` (0 polls); None on timeout."""
        now = self._clock.monotonic_ns()
        if self._first_open_ns is None:
            self._first_open_ns = now
        if self._fail_after_ns and not self._failed_once and now - self._first_open_ns >= self._fail_after_ns:
            self._failed_once = True
            raise self._fail("simulated sensor fault (fail_after_s)")
        slot = self._next_slot(timeout_s)
        if slot is None:
            return None
        pacer = self._pacer
        self._last_index = slot.index
        t0 = pacer.t0_ns if pacer is not None else slot.due_ns
        return ThermalFrame(
            index=slot.index,
            mono_ns=slot.due_ns,
            sensor_ns=_SENSOR_EPOCH_NS + slot.due_ns - t0,
            width=self._width,
            height=self._height,
            data=self.render(slot.index),
            fpa_temp_ck=self.fpa_temp_ck(slot.index),
            dropped_before=slot.dropped_before,
        )

    def render(self, index: int) -> npt.NDArray[np.uint16]:
        """Frame ``index`` in centikelvin: a pure function of the index and the seed."""
        rng = np.random.default_rng([self._seed, index])
        frame = self._background.copy()
        body_h, body_w = self._body.shape
        t_s = index / float(self._rate_hz)
        travel = self._width + body_w
        x = int((t_s / self._walk_period_s % 1.0) * travel) - body_w
        y = self._height - body_h - self._height // 10
        lo, hi = max(0, x), min(self._width, x + body_w)
        if lo < hi:
            region = frame[y : y + body_h, lo:hi]
            excess = self._body[:, lo - x : hi - x]
            warm = self._body_ck - (1.0 - excess) * 1000.0  # clothing up to 10 K cooler than skin
            np.copyto(region, warm, where=excess > 0)
        frame += rng.standard_normal(frame.shape, dtype=np.float32) * np.float32(self._noise_ck)
        out = np.clip(np.rint(frame), 0, 65535).astype(np.uint16)
        out.flags.writeable = False
        return out

    def fpa_temp_ck(self, index: int) -> int:
        """The focal-plane array warms slowly and wobbles by a few tenths of a kelvin."""
        t_s = index / float(self._rate_hz)
        return round(ZERO_C_CK + 3000 + 200 * (1 - math.exp(-t_s / 600)) + 20 * math.sin(t_s / 30))

    def _status_extra(self) -> dict[str, object]:
        return {
            "driver": "sim",
            "width": self._width,
            "height": self._height,
            "fpa_temp_ck": self.fpa_temp_ck(self._last_index),
        }
