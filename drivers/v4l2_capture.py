"""Shared OpenCV capture plumbing of the V4L2 drivers (UVC, Jetson CSI, PureThermal): open, probe, the seam."""

from __future__ import annotations

import glob
import importlib
import importlib.util
import os
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
