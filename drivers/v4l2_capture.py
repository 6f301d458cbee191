"""Shared OpenCV capture plumbing of the V4L2 drivers (UVC, Jetson CSI, PureThermal): open, probe, the seam."""

from __future__ import annotations

import glob
import importlib
import importlib.util
import os
import threading
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from hal.common import Availability, SensorError


class Capture(Protocol):
    """The part of ``cv2.VideoCapture`` the drivers use; tests pass a capture of a file or a fake."""

    def isOpened(self) -> bool: ...  # noqa: N802 - OpenCV's names

    def read(self) -> tuple[bool, npt.NDArray[Any] | None]: ...

    def set(self, prop: int, value: float) -> bool: ...

    def get(self, prop: int) -> float: ...

    def release(self) -> None: ...


def cv2_module() -> Any:
    """OpenCV, imported on first use (it is a project dependency, but a board may have a broken build)."""
    try:
        return importlib.import_module("cv2")
    except ImportError as exc:
        raise SensorError(f"OpenCV is not importable: {exc}") from exc


def resolve_device(device: str | int | None, pattern: str) -> str | int:
    """``device`` as given, or the first ``/dev/v4l/by-id`` entry matching ``pattern``."""
    if device not in (None, ""):
        return device
    found = sorted(glob.glob(f"/dev/v4l/by-id/{pattern}"))
    if not found:
        raise SensorError(f"no device matches /dev/v4l/by-id/{pattern}")
    return found[0]


def probe_device(pattern: str, what: str) -> Availability:
    """Availability of a V4L2 device found by ``/dev/v4l/by-id`` pattern."""
    if importlib.util.find_spec("cv2") is None:
        return Availability(False, "library missing: opencv-python-headless")
    found = sorted(glob.glob(f"/dev/v4l/by-id/{pattern}"))
    if not found:
        return Availability(False, f"device absent: no {what} under /dev/v4l/by-id")
    if not os.access(found[0], os.R_OK | os.W_OK):
        return Availability(False, f"permission denied: {found[0]} (add the service user to group video)")
    return Availability(True)


def open_capture(
    source: str | int,
    *,
    backend: str = "v4l2",
    fourcc: str | None = None,
    width: int | None = None,
    height: int | None = None,
    fps: float | None = None,
    convert_rgb: bool = True,
) -> Capture:
    """An opened ``cv2.VideoCapture`` with the format asked for; raise SensorError if it does not open.

    ``backend``: ``v4l2`` (a device), ``gstreamer`` (a pipeline string) or ``file`` (FFmpeg, a
    recording: the same read path, for tests and replays).
    """
    cv2 = cv2_module()
    api = {"v4l2": cv2.CAP_V4L2, "gstreamer": cv2.CAP_GSTREAMER, "file": cv2.CAP_FFMPEG}[backend]
    cap: Capture = cv2.VideoCapture(source, api)
    if not cap.isOpened():
        cap.release()
        raise SensorError(f"cannot open {source!r} with OpenCV's {backend} backend")
    if backend == "v4l2":
        if fourcc is not None:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*fourcc.ljust(4)))
        if width is not None:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        if height is not None:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        if fps is not None:
            cap.set(cv2.CAP_PROP_FPS, fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 4)
        if not convert_rgb:
            cap.set(cv2.CAP_PROP_CONVERT_RGB, 0)
    return cap


def as_uint8(frame: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    return np.ascontiguousarray(frame, dtype=np.uint8)


class CaptureLifecycle:
    """The open/read/close of one OpenCV capture, as every OpenCV driver needs it.

    Opened at most once (a second ``open`` does nothing), released once, a failed grab raised
    as SensorError naming the driver, and the V4L2 buffer's kernel timestamp read when asked
    for. A capture given at construction (a test's fake, a file) is used instead of opening one.
    Thread contract: ``open``/``close`` from any thread (under the lock); ``grab`` and
    ``sensor_ns`` on the one consumer thread.
    """

    def __init__(self, name: str, given: Capture | None = None) -> None:
        self.name = name
        self.last_error: str | None = None
        self._given = given
        self._lock = threading.Lock()
        self._cap: Capture | None = None
        self._pos_msec_prop = 0

    @property
    def is_open(self) -> bool:
        return self._cap is not None

    def open(self, make: Callable[[], Capture], *, kernel_timestamps: bool) -> bool:
        """Open with ``make`` (or take the capture given); False when it was open already.
        ``kernel_timestamps``: read each frame's V4L2 timestamp (not for a given capture)."""
        with self._lock:
            if self._cap is not None:
                return False
            try:
                if self._given is not None:
                    cap = self._given
                else:
                    cap = make()
                    if kernel_timestamps:
                        self._pos_msec_prop = int(cv2_module().CAP_PROP_POS_MSEC)
            except SensorError as exc:
                self.last_error = str(exc)
                raise SensorError(f"{self.name}: {exc}") from exc
            self._cap = cap
            return True

    def close(self) -> None:
        with self._lock:
            cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()

    def grab(self, no_frame: str) -> npt.NDArray[Any]:
        """The next image; SensorError when closed, or ``no_frame`` when the grab fails."""
        cap = self._cap
        if cap is None:
            raise SensorError(f"{self.name}: read while closed")
        ok, image = cap.read()
        if not ok or image is None:
            self.last_error = no_frame
            raise SensorError(f"{self.name}: {no_frame}")
        return image

    def sensor_ns(self, fallback_ns: int) -> int:
        """The last frame's kernel timestamp in ns when one is read, else ``fallback_ns``."""
        cap = self._cap
        if not self._pos_msec_prop or cap is None:
            return fallback_ns
        stamp_ms = cap.get(self._pos_msec_prop)  # the V4L2 buffer's kernel timestamp
        return round(stamp_ms * 1e6) if stamp_ms > 0 else fallback_ns
