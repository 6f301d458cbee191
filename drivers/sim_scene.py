"""A simulated street for the sim camera: a panning textured background, moving objects and sensor noise."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import numpy.typing as npt

Plane = npt.NDArray[np.uint8]
Planes = tuple[Plane, Plane, Plane]

SCENES = ("bars", "street")
LIGHTS = ("day", "night")
_NOISE_SLACK_PX = 96  # the noise bank is this much larger than a frame: each frame reads it at its own offset


@dataclasses.dataclass(frozen=True, slots=True)
class Light:
    """How the sensor sees the street: luma gain and lift (contrast), chroma gain, and noise."""

    luma_gain: float
    luma_lift: int
    chroma_gain: float
    noise_sigma: float  # luma code values, one standard deviation; chroma gets half


LIGHT = {
    "day": Light(luma_gain=1.0, luma_lift=0, chroma_gain=1.0, noise_sigma=2.5),
    # a dark, flat, grainy picture: what a small sensor at high gain gives under street lamps
    "night": Light(luma_gain=0.3, luma_lift=6, chroma_gain=0.5, noise_sigma=7.0),
}


def i420_planes(rgb: npt.NDArray[np.uint8]) -> Planes:
    """An RGB image with even dimensions as writable Y, U, V planes."""
    h, w = rgb.shape[:2]
    flat = np.asarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420), np.uint8).reshape(-1)
    c = (h // 2) * (w // 2)
    y = flat[: h * w].reshape(h, w).copy()
    u = flat[h * w : h * w + c].reshape(h // 2, w // 2).copy()
    v = flat[h * w + c :].reshape(h // 2, w // 2).copy()
    return y, u, v


def apply_light(planes: Planes, light: Light) -> Planes:
    y, u, v = (p.astype(np.float32) for p in planes)
    y = 16 + light.luma_lift + (y - 16) * light.luma_gain
    u = 128 + (u - 128) * light.chroma_gain
    v = 128 + (v - 128) * light.chroma_gain
    return tuple(np.clip(p, 0, 255).astype(np.uint8) for p in (y, u, v))  # type: ignore[return-value]


def street_rgb(width: int, height: int, rng: np.random.Generator) -> npt.NDArray[np.uint8]:
    """Sky, a row of textured facades with windows, a pavement and a road; periodic in x with period ``width``."""
    img = np.zeros((height, width, 3), dtype=np.uint8)
    sky_end, roof_low, kerb, road = (int(height * f) & ~1 for f in (0.22, 0.34, 0.74, 0.80))
    sky = np.linspace([120, 160, 215], [190, 210, 235], sky_end).astype(np.uint8)
    img[:sky_end] = sky[:, np.newaxis, :]
    img[sky_end:kerb] = sky[-1]
    x = 0
    while x < width:
        bw = int(rng.integers(width // 12, width // 5))
        bw = min(bw, width - x) if width - x - bw >= width // 16 else width - x  # no sliver at the seam
        top = int(rng.integers(int(height * 0.08), roof_low))
        colour = rng.integers(60, 200, 3)
        img[top:kerb, x : x + bw] = colour
        win = max(4, height // 40)
        for wy in range(top + win, kerb - 2 * win, 2 * win):
            for wx in range(x + win, x + bw - win, 2 * win):
                shade = rng.integers(20, 235)
                img[wy : wy + win, wx : wx + win] = (shade, shade, min(255, int(shade) + 20))
        x += bw
    img[kerb:road] = (150, 150, 145)
    img[road:] = (70, 70, 75)
    dash_h = max(2, (height - road) // 12)
    dash_y = road + (height - road) // 2
    for dx in range(0, width, width // 8):
        img[dash_y : dash_y + dash_h, dx : dx + width // 16] = (230, 230, 230)
    # grain: brick, render and asphalt are not flat, so the encoder has detail to track as the view pans
    grain = rng.normal(0, 14, (height, width, 1)).astype(np.int16)
    smooth = rng.normal(0, 30, (height, width)).astype(np.float32)
    blur = np.asarray(cv2.GaussianBlur(smooth, (0, 0), max(1.0, width / 200)), np.float32)
    textured = img.astype(np.int16) + grain + blur.astype(np.int16)[:, :, np.newaxis]
    out: npt.NDArray[np.uint8] = np.clip(textured, 0, 255).astype(np.uint8)
    return out


def _car_rgb(width: int, height: int, colour: npt.NDArray[np.int64]) -> npt.NDArray[np.uint8]:
    img = np.zeros((height, width, 3), dtype=np.uint8)
    img[:] = (70, 70, 75)  # the road behind it
    c = tuple(int(v) for v in colour)
    cv2.rectangle(img, (0, height // 3), (width - 1, height * 5 // 6), c, -1)
    cv2.rectangle(img, (width // 5, 0), (width * 4 // 5, height // 3), c, -1)
    cv2.rectangle(img, (width // 4, height // 12), (width * 3 // 4, height // 3), (40, 50, 60), -1)
    r = max(1, height // 6)
    for cx in (width // 4, width * 3 // 4):
        cv2.circle(img, (cx, height * 5 // 6), r, (15, 15, 15), -1)
    cv2.rectangle(img, (width - width // 12, height // 2), (width - 1, height * 2 // 3), (255, 250, 200), -1)
    return img


def _walker_rgb(width: int, height: int, colour: npt.NDArray[np.int64]) -> npt.NDArray[np.uint8]:
    img = np.zeros((height, width, 3), dtype=np.uint8)
    img[:] = (150, 150, 145)  # the pavement behind them
    c = tuple(int(v) for v in colour)
    cv2.circle(img, (width // 2, height // 8), max(1, height // 10), (200, 160, 130), -1)
    cv2.rectangle(img, (width // 5, height // 4), (width * 4 // 5, height * 3 // 5), c, -1)
    cv2.rectangle(img, (width // 4, height * 3 // 5), (width * 3 // 4, height - 1), (40, 40, 60), -1)
    return img


@dataclasses.dataclass(frozen=True, slots=True)
class _Mover:
    planes: Planes
    top: int  # even, in frame rows
    x0: int
    speed_px_per_frame: int  # even, signed


class Street:
    """Moving objects and sensor noise over a frame whose background the caller has already panned.

    Everything random is drawn from the seed once, when the scene is built; frame ``index`` then reads
    the noise bank at an offset drawn from (seed, index), so a frame is a pure function of both. Not
    thread-safe: one caller renders at a time.
    """

    def __init__(self, width: int, height: int, seed: int, light: Light) -> None:
        self._w, self._h, self._seed = width, height, seed
        rng = np.random.default_rng([seed, 1])
        self.background = apply_light(i420_planes(np.concatenate([street_rgb(width, height, rng)] * 2, axis=1)), light)
        self._movers = [self._car(rng, light, lane) for lane in (0, 1)] + [self._walker(rng, light) for _ in range(2)]
        noise_rng = np.random.default_rng([seed, 2])
        s = _NOISE_SLACK_PX
        self._noise_y = self._bank(noise_rng, (height + s, width + s), light.noise_sigma)
        self._noise_c = self._bank(noise_rng, (height // 2 + s // 2, width // 2 + s // 2), light.noise_sigma / 2)

    @staticmethod
    def _bank(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> tuple[Plane, Plane]:
        """Signed noise as a pair of unsigned planes (added, then subtracted), for saturating uint8 arithmetic."""
        noise = np.rint(rng.normal(0, sigma, shape))
        return np.clip(noise, 0, 255).astype(np.uint8), np.clip(-noise, 0, 255).astype(np.uint8)

    def _car(self, rng: np.random.Generator, light: Light, lane: int) -> _Mover:
        road = int(self._h * 0.80) & ~1
        ch = max(4, (self._h - road) // 2) & ~1
        cw = max(4, ch * 2) & ~1
        rgb = _car_rgb(cw, ch, rng.integers(30, 230, 3))
        speed = int(rng.integers(3, 8)) * 2 * (1 if lane == 0 else -1) * max(1, self._w // 640)
        if speed < 0:
            rgb = rgb[:, ::-1].copy()
        top = (road + lane * (self._h - road - ch)) & ~1
        return _Mover(apply_light(i420_planes(rgb), light), top, int(rng.integers(0, self._w)) & ~1, speed)

    def _walker(self, rng: np.random.Generator, light: Light) -> _Mover:
        kerb, road = (int(self._h * f) & ~1 for f in (0.74, 0.80))
        wh = max(4, (road - kerb) * 3) & ~1
        ww = max(2, wh // 3) & ~1
        rgb = _walker_rgb(ww, wh, rng.integers(30, 230, 3))
        speed = int(rng.integers(1, 3)) * 2 * int(rng.choice([-1, 1]))
        return _Mover(apply_light(i420_planes(rgb), light), (road - wh) & ~1, int(rng.integers(0, self._w)) & ~1, speed)

    def overlay(self, index: int, y: Plane, u: Plane, v: Plane) -> None:
        """Draw the movers at frame ``index`` and add that frame's sensor noise, in place."""
        for m in self._movers:
            self._draw(m, index, y, u, v)
        dy, dx = (int(o) & ~1 for o in np.random.default_rng([self._seed, 3, index]).integers(0, _NOISE_SLACK_PX, 2))
        # v reads the chroma bank with the offsets swapped, so its noise is not u's
        for plane, (pos, neg), oy, ox in (
            (y, self._noise_y, dy, dx),
            (u, self._noise_c, dy // 2, dx // 2),
            (v, self._noise_c, dx // 2, dy // 2),
        ):
            ph, pw = plane.shape
            cv2.add(plane, pos[oy : oy + ph, ox : ox + pw], dst=plane)
            cv2.subtract(plane, neg[oy : oy + ph, ox : ox + pw], dst=plane)

    def _draw(self, m: _Mover, index: int, y: Plane, u: Plane, v: Plane) -> None:
        sy, su, sv = m.planes
        mh, mw = sy.shape
        span = self._w + mw
        left = (m.x0 + index * m.speed_px_per_frame) % span - mw  # enters on one side, leaves on the other
        a, b = max(0, left), min(self._w, left + mw)
        if a >= b:
            return
        y[m.top : m.top + mh, a:b] = sy[:, a - left : b - left]
        u[m.top // 2 : (m.top + mh) // 2, a // 2 : b // 2] = su[:, (a - left) // 2 : (b - left) // 2]
        v[m.top // 2 : (m.top + mh) // 2, a // 2 : b // 2] = sv[:, (a - left) // 2 : (b - left) // 2]
