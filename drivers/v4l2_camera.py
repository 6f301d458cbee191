"""USB UVC cameras and Jetson CSI cameras through OpenCV: V4L2 devices or a GStreamer pipeline."""

from __future__ import annotations

import importlib.util
import logging
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

from drivers.pacing import check_float, check_int, check_name
from drivers.registry import register
from drivers.v4l2_capture import Capture, CaptureLifecycle, cv2_module, open_capture, probe_device
from hal.camera import VideoFormat, VideoFrame
from hal.clock import Clock
from hal.common import Availability

log = logging.getLogger(__name__)


def nvargus_pipeline(sensor_id: int, width: int, height: int, fps: int) -> str:
    """The Jetson CSI pipeline: the ISP (nvarguscamerasrc) to NV12 in NVMM memory, then to system memory BGR."""
    return (
        f"nvarguscamerasrc sensor-id={sensor_id} ! "
        f"video/x-raw(memory:NVMM),width={width},height={height},framerate={fps}/1,format=NV12 ! "
        "nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! "
        "appsink drop=false max-buffers=4"
    )


def bgr_to_yuv420p(frame: npt.NDArray[Any], width: int, height: int) -> npt.NDArray[np.uint8]:
    """A BGR (or grey) image as the HAL's yuv420p plane stack, (height * 3 / 2, width); resized if needed."""
    cv2 = cv2_module()
    if frame.ndim == 2:
        frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.shape[1] != width or frame.shape[0] != height:
        frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
    out: npt.NDArray[np.uint8] = np.ascontiguousarray(cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420), dtype=np.uint8)
    return out


@register("camera", "v4l2")
class V4l2Camera:
    """A USB UVC camera, a Jetson CSI camera (GStreamer) or a video file, through OpenCV.

    Whatever OpenCV can open: a V4L2 device (``/dev/video0``, a ``/dev/v4l/by-id`` path), a
    GStreamer pipeline (Jetson CSI: ``csi_sensor_id``), or a video file (``backend = "file"``,
    the same read path, for tests and bench replays).

    UVC cameras are asked for MJPG so that 1080p30 fits USB 2 bandwidth. ``read`` blocks for one
    frame whatever ``timeout_s`` says (OpenCV offers no timeout); a failed grab raises
    SensorError. One consumer thread; ``get_status`` is safe from any thread.
    """

    def __init__(
        self,
        *,
        name: str,
        clock: Clock,
        device: str = "/dev/video0",
        backend: str = "v4l2",
        csi_sensor_id: int | None = None,
        width: int = 1920,
        height: int = 1080,
        fps: float = 30.0,
        fourcc: str = "MJPG",
        capture: Capture | None = None,
    ) -> None:
        self.name = check_name(name)
        self._clock = clock
        if backend not in ("v4l2", "gstreamer", "file"):
            raise ValueError(f"backend: expected 'v4l2', 'gstreamer' or 'file', got {backend!r}")
        self._backend = backend
        self._device = device
        self._csi = None if csi_sensor_id is None else check_int("csi_sensor_id", csi_sensor_id, 0, 7)
        self._width = check_int("width", width, 16, 7680)
        self._height = check_int("height", height, 16, 4320)
        if self._width % 2 or self._height % 2:
            raise ValueError("width and height must be even for yuv420p")
        self._fps = Fraction(check_float("fps", fps, 1.0, 240.0)).limit_denominator(1001)
        self._fourcc = fourcc
        self._capture = CaptureLifecycle(self.name, capture)
        self._index = 0

    @property
    def format(self) -> VideoFormat:
        return VideoFormat(self._width, self._height, self._fps.numerator, self._fps.denominator, "yuv420p")

    @property
    def capabilities(self) -> frozenset[str]:
        return frozenset()

    @classmethod
    def probe(cls) -> Availability:
        if importlib.util.find_spec("cv2") is None:
            return Availability(False, "library missing: opencv-python-headless")
        return probe_device("*-video-index0", "V4L2 camera")

    def open(self) -> None:
        def make() -> Capture:
            if self._csi is not None:
                pipeline = nvargus_pipeline(self._csi, self._width, self._height, round(self._fps))
                return open_capture(pipeline, backend="gstreamer")
            return open_capture(self._device, backend=self._backend, fourcc=self._fourcc,
                                width=self._width, height=self._height, fps=float(self._fps))

        if self._capture.open(make, kernel_timestamps=self._backend == "v4l2" and self._csi is None):
            self._index = 0

    def close(self) -> None:
        self._capture.close()

    def __enter__(self) -> V4l2Camera:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, timeout_s: float) -> VideoFrame | None:
        """The next frame as yuv420p; raises SensorError when the grab fails (unplugged, end of file)."""
        image = self._capture.grab("no frame (camera unplugged, or the end of the file)")
        now = self._clock.monotonic_ns()
        sensor_ns = self._capture.sensor_ns(now)
        data = bgr_to_yuv420p(image, self._width, self._height)
        frame = VideoFrame(self.name, self._index, now, sensor_ns, self._width, self._height, "yuv420p", data)
        self._index += 1
        return frame

    def get_status(self) -> dict[str, object]:
        return {
            "name": self.name,
            "driver": "v4l2",
            "open": self._capture.is_open,
            "source": f"csi:{self._csi}" if self._csi is not None else self._device,
            "backend": "gstreamer" if self._csi is not None else self._backend,
            "frames": self._index,
            "dropped": 0,
            "last_error": self._capture.last_error,
        }
