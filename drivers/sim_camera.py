"""A simulated camera: scrolling colour bars or a street scene, with the UTC time and frame counter burned in."""

from __future__ import annotations

import datetime

import cv2
import numpy as np
import numpy.typing as npt

from drivers import sim_timecode
from drivers.pacing import PacedDevice, check_float, check_int, rate_fraction
from drivers.registry import register
from drivers.sim_scene import LIGHT, LIGHTS, SCENES, Street
from hal.camera import VideoFormat, VideoFrame
from hal.clock import Clock

# 75 % colour bars (white, yellow, cyan, green, magenta, red, blue, black) in RGB.
_BARS_RGB = np.array(
    [[191, 191, 191], [191, 191, 0], [0, 191, 191], [0, 191, 0], [191, 0, 191], [191, 0, 0], [0, 0, 191], [0, 0, 0]],
    dtype=np.uint8,
)
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_SENSOR_EPOCH_NS = 7_000_000_000  # the sensor's counter started before the host opened it


def _pattern_rgb(width: int, height: int) -> npt.NDArray[np.uint8]:
    """Colour bars over the top two thirds, a grey ramp below; periodic in x with period ``width``."""
    img = np.empty((height, width, 3), dtype=np.uint8)
    split = (height * 2 // 3) & ~1
    bar = (np.arange(width) * len(_BARS_RGB)) // width
    img[:split] = _BARS_RGB[bar][np.newaxis, :, :]
    ramp = (np.abs(np.arange(width) * 2 - width) * 255 // width).astype(np.uint8)  # triangle: no seam
    img[split:] = ramp[np.newaxis, :, np.newaxis]
    return img


@register("camera", "sim")
class SimCamera(PacedDevice):
    """A deterministic stand-in for the body camera's image sensor.

    The yuv420p background is converted once at twice the width, so each frame is three slice
    copies plus text in a small box: cheap enough for 1080p30 on one core. ``scene = "street"``
    adds what makes an encoder work as in the field: a textured panorama, moving cars and people,
    and per-frame sensor noise, more of it at ``light = "night"`` (see drivers.sim_scene).
    ``timecode = true`` adds a machine-readable strip of the same instant along the bottom edge
    (drivers.sim_timecode), which the live-view tests read from decoded frames. Frames
    are new read-only arrays, safe to keep. ``read`` is for one consumer thread (see PacedDevice).
    """

    def __init__(
        self,
        *,
        name: str,
        clock: Clock,
        width: int = 1280,
        height: int = 720,
        fps: float = 30.0,
        seed: int = 0,
        speed_px_per_frame: int = 4,
        queue_frames: int = 4,
        scene: str = "bars",
        light: str = "day",
        timecode: bool = False,
    ) -> None:
        if scene not in SCENES:
            raise ValueError(f"scene: expected one of {', '.join(SCENES)}, got {scene!r}")
        if light not in LIGHTS:
            raise ValueError(f"light: expected one of {', '.join(LIGHTS)}, got {light!r}")
        if scene == "bars" and light != "day":
            raise ValueError(f"light: only the street scene has day and night, got {light!r} with bars")
        width = check_int("width", width, 16, 7680)
        height = check_int("height", height, 16, 4320)
        if width % 2 or height % 2:
            raise ValueError(f"width, height: yuv420p needs even dimensions, got {width}x{height}")
        fps_exact = rate_fraction(check_float("fps", fps, 0.1, 240.0))
        super().__init__(
            name=name, clock=clock, rate_hz=fps_exact, queue_depth=check_int("queue_frames", queue_frames, 1, 64)
        )
        self._seed = check_int("seed", seed, 0, 2**32 - 1)
        # Even steps keep the 2x2 chroma blocks aligned with the luma they belong to.
        self._speed = check_int("speed_px_per_frame", speed_px_per_frame, 0, width) & ~1
        self._format = VideoFormat(width, height, fps_exact.numerator, fps_exact.denominator)
        self._base: tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8], npt.NDArray[np.uint8]] | None = None
        self._scene, self._light = scene, light
        self._timecode = bool(timecode)
        self._street: Street | None = None
        self._phase = int(np.random.default_rng(self._seed).integers(0, width // 2)) * 2
        self._font_scale = height / 720
        self._thickness = max(1, round(2 * self._font_scale))
        (text_w, text_h), baseline = cv2.getTextSize(self._label(0, 0), _FONT, self._font_scale, self._thickness)
        margin = max(2, round(8 * self._font_scale)) & ~1
        box_w = min(width - 2 * margin, text_w + 2 * margin + 8) & ~1
        box_h = min(height - 2 * margin, text_h + baseline + 2 * margin) & ~1
        self._box = (margin, margin, box_w, box_h)  # x, y, w, h: all even, so chroma aligns
        self._text_origin = (margin, margin + text_h)

    @property
    def format(self) -> VideoFormat:
        return self._format

    @property
    def capabilities(self) -> frozenset[str]:
        return frozenset()

    def _open_source(self) -> None:
        if self._base is None and self._scene == "street":
            self._street = Street(self._format.width, self._format.height, self._seed, LIGHT[self._light])
            self._base = self._street.background
        if self._base is None:
            w, h = self._format.width, self._format.height
            rgb = _pattern_rgb(w, h)
            i420 = np.asarray(cv2.cvtColor(np.concatenate([rgb, rgb], axis=1), cv2.COLOR_RGB2YUV_I420), np.uint8)
            flat = i420.reshape(-1)
            y_size, c_size = h * 2 * w, (h // 2) * w
            u = flat[y_size : y_size + c_size].reshape(h // 2, w)
            v = flat[y_size + c_size : y_size + 2 * c_size].reshape(h // 2, w)
            self._base = (i420[:h], u, v)

    def read(self, timeout_s: float) -> VideoFrame | None:
        """The next frame, waiting up to ``timeout_s`` (0 polls); None on timeout."""
        slot = self._next_slot(timeout_s)
        if slot is None:
            return None
        utc_ns = self._clock.utc_ns() - (self._clock.monotonic_ns() - slot.due_ns)
        return VideoFrame(
            camera=self.name,
            index=slot.index,
            mono_ns=slot.due_ns,
            sensor_ns=_SENSOR_EPOCH_NS + slot.due_ns - self._t0_ns(),
            width=self._format.width,
            height=self._format.height,
            pixel_format="yuv420p",
            data=self.render(slot.index, utc_ns),
            dropped_before=slot.dropped_before,
        )

    def render(self, index: int, utc_ns: int) -> npt.NDArray[np.uint8]:
        """Frame ``index`` labelled with ``utc_ns``: a pure function of its arguments and the seed."""
        if self._base is None:
            self._open_source()
        assert self._base is not None
        base_y, base_u, base_v = self._base
        w, h = self._format.width, self._format.height
        off = (self._phase + index * self._speed) % w
        out = np.empty((h * 3 // 2, w), dtype=np.uint8)
        flat = out.reshape(-1)
        u = flat[h * w : h * w + (h // 2) * (w // 2)].reshape(h // 2, w // 2)
        v = flat[h * w + (h // 2) * (w // 2) :].reshape(h // 2, w // 2)
        out[:h] = base_y[:, off : off + w]
        u[:] = base_u[:, off // 2 : off // 2 + w // 2]
        v[:] = base_v[:, off // 2 : off // 2 + w // 2]
        if self._street is not None:
            self._street.overlay(index, out[:h], u, v)
        x, y, bw, bh = self._box
        out[y : y + bh, x : x + bw] = 16
        u[y // 2 : (y + bh) // 2, x // 2 : (x + bw) // 2] = 128
        v[y // 2 : (y + bh) // 2, x // 2 : (x + bw) // 2] = 128
        box = out[y : y + bh, x : x + bw]  # drawing into the box view clips the text to it
        cv2.putText(
            box,
            self._label(index, utc_ns),
            self._text_origin,
            _FONT,
            self._font_scale,
            235,
            self._thickness,
            cv2.LINE_8,
        )
        if self._timecode:
            sim_timecode.draw(out[:h], u, v, utc_ns // 1_000_000, index)
        out.flags.writeable = False
        return out

    @property
    def label_box(self) -> tuple[int, int, int, int]:
        """Where the burned-in label is drawn in every frame: x, y, width, height (even numbers)."""
        return self._box

    def label_time_width(self, utc_ns: int) -> int:
        """How many pixels from the box's left the label's time (up to its ``Z``) takes."""
        time_text = self._label(0, utc_ns).split(" #")[0]
        (width, _), _ = cv2.getTextSize(time_text, _FONT, self._font_scale, self._thickness)
        return int(self._text_origin[0] + width)

    def label_luma(self, index: int, utc_ns: int) -> npt.NDArray[np.uint8]:
        """The label box's luma exactly as ``render`` draws it (for tests that read a frame back)."""
        x, y, bw, bh = self._box
        box = np.full((bh, bw), 16, dtype=np.uint8)
        cv2.putText(box, self._label(index, utc_ns), self._text_origin, _FONT, self._font_scale, 235,
                    self._thickness, cv2.LINE_8)
        return box

    def _label(self, index: int, utc_ns: int) -> str:
        utc = datetime.datetime.fromtimestamp(utc_ns // 1_000_000_000, datetime.UTC)
        millis = (utc_ns // 1_000_000) % 1000
        return f"{utc:%Y-%m-%d %H:%M:%S}.{millis:03d}Z #{index:07d}"

    def _t0_ns(self) -> int:
        pacer = self._pacer
        return pacer.t0_ns if pacer is not None else 0

    def _status_extra(self) -> dict[str, object]:
        f = self._format
        return {
            "driver": "sim",
            "width": f.width,
            "height": f.height,
            "pixel_format": f.pixel_format,
            "scene": self._scene,
            "light": self._light,
            "timecode": self._timecode,
        }
