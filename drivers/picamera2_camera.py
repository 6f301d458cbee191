"""Raspberry Pi cameras through picamera2/libcamera, sensor timestamps passed through."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import threading
import types
from collections.abc import Callable, Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from drivers.pacing import check_float, check_int, check_name
from drivers.picamera2_h264 import PROBE_FORCE_AT, PROBE_KEYFRAME_WITHIN, PROBE_UNITS_MAX, Picamera2H264, judge_probe
from drivers.registry import register
from hal.camera import H264_ENCODER, EncodedVideo, H264Probe, H264Settings, VideoFormat, VideoFrame
from hal.clock import Clock
from hal.common import Availability, SensorError

log = logging.getLogger(__name__)

V4L2_SYSFS = Path("/sys/class/video4linux")
M2M_ENCODER_NAME = "bcm2835-codec-encode"  # the Pi 4's hardware H.264 encoder (V4L2 memory-to-memory)


def video4linux_names(root: Path = V4L2_SYSFS) -> dict[str, str]:
    """``/dev/videoN`` to the driver's device name, as sysfs lists them."""
    names: dict[str, str] = {}
    if root.is_dir():
        for entry in sorted(root.iterdir()):
            try:
                names[f"/dev/{entry.name}"] = (entry / "name").read_text().strip()
            except OSError:
                continue
    return names


def choose_h264_encoder(names: Mapping[str, str]) -> tuple[str, str | None]:
    """The board's H.264 encoder by what it has, not by its model: the V4L2 M2M encoder when
    the kernel exposes one (Pi 4), else libav in software (the Pi 5 has no video encoder)."""
    for device, name in sorted(names.items()):
        if name == M2M_ENCODER_NAME:
            return "v4l2m2m", device
    return "libav", None


def load_library() -> Any:
    """picamera2 and the two submodules the driver uses, imported only when a camera opens."""
    return types.SimpleNamespace(Picamera2=importlib.import_module("picamera2").Picamera2,
                                 encoders=importlib.import_module("picamera2.encoders"),
                                 outputs=importlib.import_module("picamera2.outputs"))


@register("camera", "picamera2")
class Picamera2Camera:
    """A Raspberry Pi camera through picamera2/libcamera, YUV420 with libcamera's SensorTimestamp.

    Camera Module 3, HQ or global shutter. ``h264_encoder`` says which H.264 encoder this board offers (the recorder's
    choice); ``capabilities`` has ``h264-hw`` when that is the V4L2 M2M hardware encoder, and then
    ``h264-encoder`` too: after ``encode_with`` the camera encodes with picamera2's H264Encoder and
    ``read`` returns its units (``EncodedVideo``, see ``drivers/picamera2_h264.py``), not frames.

    picamera2 is not on PyPI in a usable form for the Pi: it comes from the system package
    (python3-picamera2) in a venv made with ``--system-site-packages``. One consumer thread.
    """

    def __init__(
        self,
        *,
        name: str,
        clock: Clock,
        camera_num: int = 0,
        width: int = 1920,
        height: int = 1080,
        fps: float = 30.0,
        buffer_count: int = 6,
        sysfs_root: str = str(V4L2_SYSFS),
    ) -> None:
        self.name = check_name(name)
        self._clock = clock
        self._camera_num = check_int("camera_num", camera_num, 0, 7)
        self._width = check_int("width", width, 64, 4608)
        self._height = check_int("height", height, 64, 3456)
        if self._width % 2 or self._height % 2:
            raise ValueError("width and height must be even for yuv420p")
        self._fps = Fraction(check_float("fps", fps, 1.0, 120.0)).limit_denominator(1001)
        self._buffers = check_int("buffer_count", buffer_count, 2, 16)
        self._encoder, self._encoder_device = choose_h264_encoder(video4linux_names(Path(sysfs_root)))
        self._lock = threading.Lock()
        self._cam: Any = None
        self._index = 0
        self._last_seq: int | None = None
        self._dropped = 0
        self._last_error: str | None = None
        self._h264: H264Settings | None = None
        self._keyframe_due: Callable[[], bool] = lambda: False
        self._stream: Picamera2H264 | None = None
        self._last_stream: Picamera2H264 | None = None  # its counters stay in the status after close

    @property
    def format(self) -> VideoFormat:
        return VideoFormat(self._width, self._height, self._fps.numerator, self._fps.denominator, "yuv420p")

    @property
    def capabilities(self) -> frozenset[str]:
        return frozenset({"h264-hw", H264_ENCODER}) if self._encoder == "v4l2m2m" else frozenset()

    @property
    def h264_encoder(self) -> tuple[str, str | None]:
        return self._encoder, self._encoder_device

    @classmethod
    def probe(cls) -> Availability:
        if importlib.util.find_spec("picamera2") is None:
            return Availability(False, "library missing: apt install python3-picamera2 (venv --system-site-packages)")
        try:
            picamera2: Any = importlib.import_module("picamera2")
            cameras = picamera2.Picamera2.global_camera_info()
        except Exception as exc:  # libcamera raises RuntimeError and friends
            return Availability(False, f"library missing: picamera2 does not load ({exc})")
        if not cameras:
            return Availability(False, "device absent: libcamera sees no camera (check the ribbon, dtoverlay)")
        return Availability(True)

    def open(self) -> None:
        with self._lock:
            if self._cam is not None:
                return
            try:
                picamera2: Any = self._library()
            except ImportError as exc:
                self._last_error = "picamera2 is not installed (apt install python3-picamera2)"
                raise SensorError(f"{self.name}: {self._last_error}") from exc
            frame_us = round(1e6 / float(self._fps))
            cam: Any = None
            stream = None
            try:
                cam = picamera2.Picamera2(self._camera_num)
                config = cam.create_video_configuration(
                    main={"size": (self._width, self._height), "format": "YUV420"},
                    buffer_count=self._buffers,
                    controls={"FrameDurationLimits": (frame_us, frame_us)},
                )
                cam.configure(config)
                if self._h264 is not None:
                    stream = Picamera2H264(picamera2, cam, self._h264, self.name, self._clock.monotonic_ns)
                    stream.start()
                cam.start()
            except Exception as exc:  # libcamera errors are RuntimeErrors of many kinds
                self._last_error = f"starting camera {self._camera_num}: {exc}"
                if cam is not None:
                    _close_quietly(cam, stream)
                raise SensorError(f"{self.name}: {self._last_error}") from exc
            self._cam, self._stream, self._index, self._last_seq, self._dropped = cam, stream, 0, None, 0
            log.info("%s: H.264 encoder on this board: %s %s", self.name, self._encoder, self._encoder_device or "")

    def _library(self) -> Any:
        """The picamera2 library (the seam a test replaces with a hand-written fake)."""
        return load_library()

    def close(self) -> None:
        with self._lock:
            cam, self._cam = self._cam, None
            stream, self._stream = self._stream, None
            self._last_stream = stream or self._last_stream
        if cam is not None:
            cam.stop()
            if stream is not None:
                stream.stop()
            cam.close()

    def encode_with(self, settings: H264Settings, keyframe_due: Callable[[], bool]) -> None:
        """From the next ``open``, encode with picamera2's H264Encoder at ``settings``; ``read``
        then returns ``EncodedVideo`` and forces a keyframe whenever ``keyframe_due()`` says so."""
        if H264_ENCODER not in self.capabilities:
            raise SensorError(f"{self.name}: {self.no_encoder_reason()}")
        self._h264, self._keyframe_due = settings, keyframe_due

    def no_encoder_reason(self) -> str:
        return (f"picamera2's H264Encoder needs the board's V4L2 M2M encoder ({M2M_ENCODER_NAME}), which this board "
                "lacks (a Pi 5 has no H.264 encoder)")

    def probe_h264(self, settings: H264Settings) -> H264Probe:
        """Open the camera with picamera2's encoder at ``settings`` (but a GOP longer than the
        probe), ask for a keyframe after PROBE_FORCE_AT units, check it comes, and close again."""
        if H264_ENCODER not in self.capabilities:
            return H264Probe(None, self.no_encoder_reason())
        saved = self._h264, self._keyframe_due
        ask = _Once()
        self._h264, self._keyframe_due = H264Settings(settings.bitrate_bps, PROBE_UNITS_MAX * 2), ask
        units: list[tuple[bool, bytes]] = []
        forced_at, backlog = PROBE_FORCE_AT, 0
        try:
            self.open()
            while len(units) < min(PROBE_UNITS_MAX, forced_at + backlog + PROBE_KEYFRAME_WITHIN):
                if len(units) == forced_at:
                    ask.armed = True
                    backlog = self._stream.backlog if self._stream is not None else 0
                unit = self.read(2.0)
                if unit is None:
                    break
                assert isinstance(unit, EncodedVideo)
                units.append((unit.keyframe, unit.data))
        except SensorError as exc:
            return H264Probe(None, f"does not start: {exc}")
        finally:
            self.close()
            self._h264, self._keyframe_due = saved
        header, problem = judge_probe(units, forced_at, backlog)
        where = f"{self._width}x{self._height} at {float(self._fps):g} fps"
        if problem:
            return H264Probe(None, f"refused at {where}: {problem}")
        return H264Probe(header, f"picamera2 H264Encoder opened at {where}, requested keyframes honoured")

    def read(self, timeout_s: float) -> VideoFrame | EncodedVideo | None:
        """The next frame (or encoded unit, after ``encode_with``); None when none completes
        within ``timeout_s``."""
        cam = self._cam
        if cam is None:
            raise SensorError(f"{self.name}: read while closed")
        stream = self._stream
        if stream is not None:
            if self._keyframe_due():
                stream.force_keyframe()
            return stream.read(timeout_s)
        try:
            job = cam.capture_request(wait=False)
            request = cam.wait(job, timeout=max(timeout_s, 0.0))
        except TimeoutError:
            return None
        except Exception as exc:
            self._last_error = f"capture: {exc}"
            raise SensorError(f"{self.name}: {self._last_error}") from exc
        if request is None:
            return None
        try:
            data = np.ascontiguousarray(request.make_array("main"), dtype=np.uint8)
            meta = request.get_metadata()
        finally:
            request.release()
        return self.frame_from(data, meta, self._clock.monotonic_ns())

    def frame_from(self, data: Any, meta: Mapping[str, Any], mono_ns: int) -> VideoFrame:
        """A HAL frame from a YUV420 array and libcamera metadata (SensorTimestamp ns, FrameSequence)."""
        seq = meta.get("FrameSequence")
        dropped = 0
        if isinstance(seq, int):
            if self._last_seq is not None and seq > self._last_seq + 1:
                dropped = seq - self._last_seq - 1
            self._last_seq = seq
        self._dropped += dropped
        sensor_ns = meta.get("SensorTimestamp")
        yuv = np.asarray(data, dtype=np.uint8)[: self._height * 3 // 2, : self._width]  # drop stride padding
        index = self._index + dropped
        self._index = index + 1
        return VideoFrame(self.name, index, mono_ns, int(sensor_ns) if isinstance(sensor_ns, int) else mono_ns,
                          self._width, self._height, "yuv420p", yuv, dropped)  # fmt: skip

    def get_status(self) -> dict[str, object]:
        return {
            "name": self.name,
            "driver": "picamera2",
            "open": self._cam is not None,
            "camera_num": self._camera_num,
            "h264_encoder": self._encoder,
            "h264_device": self._encoder_device,
            "frames": self._index,
            "encoding": None if (stream := self._stream or self._last_stream) is None else stream.get_status(),
            "dropped": self._dropped,
            "last_error": self._last_error,
        }


class _Once:
    """A keyframe wish the probe arms once; the camera's ``read`` takes it."""

    def __init__(self) -> None:
        self.armed = False

    def __call__(self) -> bool:
        fire, self.armed = self.armed, False
        return fire


def _close_quietly(cam: Any, stream: Picamera2H264 | None) -> None:
    """Undo a failed start without hiding the error that made it fail."""
    steps = [cam.stop] + ([stream.stop] if stream is not None else []) + [cam.close]
    for step in steps:
        try:
            step()
        except Exception as exc:  # the start's own error is the one reported
            log.debug("cleaning up after a failed start: %s", exc)
