"""A camera that plays a video file (decoded with PyAV) at its native frame rate, as yuv420p."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from drivers.pacing import PacedDevice, check_bool, check_int, check_path
from drivers.registry import register
from hal.camera import VideoFormat, VideoFrame
from hal.clock import Clock
from hal.common import Availability

log = logging.getLogger(__name__)


@register("camera", "replay")
class ReplayCamera(PacedDevice):
    """Plays recorded footage through the live pipeline, paced like a sensor.

    ``format`` comes from the file's header, read when the driver is created (so a bad
    ``path`` is a config error) and again at ``open``. Frames the consumer was too late
    for are decoded and discarded, as a sensor's queue overflows. PyAV is imported only when
    used, never at module import. ``read`` is for one consumer thread; ``close`` from another thread
    waits for a decode in progress to finish.
    """

    def __init__(self, *, name: str, clock: Clock, path: str | Path, loop: bool = True, queue_frames: int = 4) -> None:
        self._path = check_path("path", path)
        try:
            self._format = _inspect(self._path)
        except ValueError as exc:
            raise ValueError(f"path: {exc}") from None
        rate = Fraction(self._format.fps_num, self._format.fps_den)
        depth = check_int("queue_frames", queue_frames, 1, 64)
        super().__init__(name=name, clock=clock, rate_hz=rate, queue_depth=depth)
        self._loop = check_bool("loop", loop)
        self._decode_lock = threading.Lock()
        self._container: Any = None
        self._frames: Iterator[Any] | None = None
        self._laps = 0
        self._lap_offset_ns = 0
        self._last_pts_ns = 0
        self._ended = False

    @classmethod
    def probe(cls) -> Availability:
        try:
            import av  # noqa: F401
        except ImportError as exc:
            return Availability(False, f"PyAV is not installed: {exc}")
        return Availability(True)

    @property
    def format(self) -> VideoFormat:
        """The file's size and native frame rate, read when the driver is created."""
        return self._format

    @property
    def capabilities(self) -> frozenset[str]:
        return frozenset()

    def _open_source(self) -> None:
        try:
            self._format = _inspect(self._path)
        except ValueError as exc:
            raise self._fail(str(exc)) from exc
        self._rate_hz = Fraction(self._format.fps_num, self._format.fps_den)
        self._laps, self._lap_offset_ns, self._last_pts_ns, self._ended = 0, 0, 0, False
        self._start_decoder()

    def _start_decoder(self) -> None:
        import av

        try:
            self._container = av.open(str(self._path))
            stream = self._container.streams.video[0]
            stream.thread_type = "AUTO"
            self._frames = iter(self._container.decode(stream))
        except (av.FFmpegError, OSError) as exc:
            raise self._fail(f"decoding {self._path}: {exc}") from exc

    def _close_source(self) -> None:
        with self._decode_lock:
            if self._container is not None:
                self._container.close()
            self._container, self._frames = None, None

    def _next_frame(self) -> Any:
        """The next decoded frame, restarting at the end when looping; None at the end otherwise."""
        import av

        for _ in range(2):
            if self._frames is None:
                return None
            try:
                return next(self._frames)
            except StopIteration:
                pass
            except av.FFmpegError as exc:
                raise self._fail(f"decoding {self._path}: {exc}") from exc
            if not self._loop:
                return None
            self._laps += 1
            log.debug("%s: end of %s, starting lap %d", self.name, self._path, self._laps + 1)
            self._lap_offset_ns += self._last_pts_ns + round(1e9 / self._rate_hz)
            self._container.close()
            self._start_decoder()
        raise self._fail(f"{self._path} has no decodable frames")

    def read(self, timeout_s: float) -> VideoFrame | None:
        """The next frame, waiting up to ``timeout_s`` (0 polls); None on timeout or after the
        end of a file that does not loop."""
        slot = self._next_slot(timeout_s)
        if slot is None:
            return None
        fmt = self._format
        with self._decode_lock:
            frame = None
            for _ in range(slot.dropped_before + 1):
                frame = self._next_frame()
                if frame is None:
                    break
            if frame is None:
                self._ended = True
                if self._pacer is not None:
                    self._pacer.end_at(slot.index)
                return None
            if frame.pts is not None and frame.time_base is not None:
                self._last_pts_ns = round(frame.pts * frame.time_base * 1_000_000_000)
            data = self._to_yuv(frame, fmt)
        return VideoFrame(
            camera=self.name,
            index=slot.index,
            mono_ns=slot.due_ns,
            sensor_ns=self._lap_offset_ns + self._last_pts_ns,
            width=fmt.width,
            height=fmt.height,
            pixel_format="yuv420p",
            data=data,
            dropped_before=slot.dropped_before,
        )

    @staticmethod
    def _to_yuv(frame: Any, fmt: VideoFormat) -> npt.NDArray[np.uint8]:
        converted = frame.reformat(width=fmt.width, height=fmt.height, format="yuv420p")
        data: npt.NDArray[np.uint8] = np.ascontiguousarray(converted.to_ndarray(), dtype=np.uint8)
        data.flags.writeable = False
        return data

    def _status_extra(self) -> dict[str, object]:
        status: dict[str, object] = {"driver": "replay", "path": str(self._path), "laps": self._laps}
        status.update(ended=self._ended, width=self._format.width, height=self._format.height)
        return status


def _inspect(path: Path) -> VideoFormat:
    """The size and frame rate of the first video stream of ``path``; ValueError saying what is wrong."""
    try:
        import av
    except ImportError as exc:
        raise ValueError(f"PyAV is needed to replay {path}: {exc}") from None
    if not path.is_file():
        raise ValueError(f"no video file at {path}")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"{path} has no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            width, height = stream.codec_context.width & ~1, stream.codec_context.height & ~1
    except (av.FFmpegError, OSError) as exc:
        raise ValueError(f"cannot read video file {path}: {exc}") from None
    if not rate or rate <= 0 or width <= 0 or height <= 0:
        raise ValueError(f"{path}: cannot tell the frame size and rate")
    exact = Fraction(rate.numerator, rate.denominator)
    return VideoFormat(width, height, exact.numerator, exact.denominator)
