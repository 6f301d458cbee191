"""Raspberry Pi cameras through picamera2/libcamera, sensor timestamps passed through."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import threading
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from drivers.pacing import check_float, check_int, check_name
from drivers.registry import register
from hal.camera import VideoFormat, VideoFrame
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


@register("camera", "picamera2")
class Picamera2Camera:
    """A Raspberry Pi camera through picamera2/libcamera, YUV420 with libcamera's SensorTimestamp.

    Camera Module 3, HQ or global shutter. ``h264_encoder`` says which H.264 encoder this board offers (the recorder's
    choice); ``capabilities`` has ``h264-hw`` when that is the V4L2 M2M hardware encoder.

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

    @property
    def format(self) -> VideoFormat:
        return VideoFormat(self._width, self._height, self._fps.numerator, self._fps.denominator, "yuv420p")

    @property
    def capabilities(self) -> frozenset[str]:
        return frozenset({"h264-hw"}) if self._encoder == "v4l2m2m" else frozenset()

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
                picamera2: Any = importlib.import_module("picamera2")
            except ImportError as exc:
                self._last_error = "picamera2 is not installed (apt install python3-picamera2)"
                raise SensorError(f"{self.name}: {self._last_error}") from exc
            frame_us = round(1e6 / float(self._fps))
            try:
                cam = picamera2.Picamera2(self._camera_num)
                config = cam.create_video_configuration(
                    main={"size": (self._width, self._height), "format": "YUV420"},
                    buffer_count=self._buffers,
                    controls={"FrameDurationLimits": (frame_us, frame_us)},
                )
                cam.configure(config)
                cam.start()
            except Exception as exc:  # libcamera errors are RuntimeErrors of many kinds
                self._last_error = f"starting camera {self._camera_num}: {exc}"
                raise SensorError(f"{self.name}: {self._last_error}") from exc
            self._cam, self._index, self._last_seq, self._dropped = cam, 0, None, 0
            log.info("%s: H.264 encoder on this board: %s %s", self.name, self._encoder, self._encoder_device or "")

    def close(self) -> None:
        with self._lock:
            cam, self._cam = self._cam, None
        if cam is not None:
            cam.stop()
            cam.close()

    def read(self, timeout_s: float) -> VideoFrame | None:
        """The next frame; None when none completes within ``timeout_s``."""
        cam = self._cam
        if cam is None:
            raise SensorError(f"{self.name}: read while closed")
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
            "dropped": self._dropped,
            "last_error": self._last_error,
        }
