"""A hand-written fake of the part of picamera2 the camera driver uses, encoding real H.264.

``FakePicamera2Library`` stands where ``drivers.picamera2_camera.load_library()`` returns the
real library: ``Picamera2`` (configure, start_encoder, start, stop, stop_encoder, close),
``encoders.H264Encoder`` (bitrate, repeat, iperiod, ``force_key_frame``, ``firsttimestamp``) and
``outputs.Output`` (whose ``outputframe(frame, keyframe, timestamp_us)`` the encoder calls, and
which the encoder insists its outputs are). Like picamera2 on a Pi 4 it hands out Annex B
units with SPS/PPS before each IDR and timestamps in microseconds since the first frame; the
bytes come from libx264 (PyAV), so they decode. Knobs make it misbehave the ways a real board
could: requested keyframes ignored, no in-band headers, sensor timestamps on a clock of its own.
"""

from __future__ import annotations

import threading
import time
import types
from fractions import Fraction
from typing import Any

import av
import av.video.frame
import numpy as np

from drivers.h264_annexb import NAL_PPS, NAL_SPS, START_CODE, nal_type, nal_units
from drivers.picamera2_camera import M2M_ENCODER_NAME, Picamera2Camera


class FakeOutput:
    """picamera2.outputs.Output: ``recording`` while the encoder runs; ``outputframe`` per unit."""

    def __init__(self, pts: Any = None) -> None:
        self.recording = False
        self.needs_pacing = False
        self.needs_add_stream = False

    def start(self) -> None:
        self.recording = True

    def stop(self) -> None:
        self.recording = False

    def outputframe(self, frame: bytes | None, keyframe: bool = True, timestamp: int | None = None,
                    packet: Any = None, audio: bool = False) -> None:
        """Overridden by real outputs."""

    def _add_stream(self, *args: Any, **kwargs: Any) -> None:
        """Told about the encoder's stream; nothing to do here."""


class FakePicamera2Library:
    """The library, with the board's behaviour chosen by the test."""

    def __init__(self, *, honour_keyframe_requests: bool = True, in_band_headers: bool = True,
                 sensor_clock: str = "host", cameras: int = 1) -> None:
        self.honour_keyframe_requests = honour_keyframe_requests
        self.in_band_headers = in_band_headers
        self.sensor_clock = sensor_clock  # "host": CLOCK_MONOTONIC stamps; "own": a clock of its own
        self.cameras_present = cameras
        self.opened: list[FakeCamera] = []
        library = self

        class H264Encoder(FakeH264Encoder):
            def __init__(self, bitrate: int | None = None, repeat: bool = True, iperiod: int | None = None,
                         **rest: Any) -> None:
                super().__init__(library, bitrate, repeat, iperiod)

        class Picamera2(FakeCamera):
            def __init__(self, camera_num: int = 0) -> None:
                super().__init__(library, camera_num)

            @staticmethod
            def global_camera_info() -> list[dict[str, Any]]:
                return [{"Model": "imx708", "Num": n} for n in range(library.cameras_present)]

        self.Picamera2 = Picamera2
        self.encoders = types.SimpleNamespace(H264Encoder=H264Encoder)
        self.outputs = types.SimpleNamespace(Output=FakeOutput)


class FakeH264Encoder:
    """picamera2.encoders.H264Encoder, encoding with libx264 on the camera's thread."""

    def __init__(self, library: FakePicamera2Library, bitrate: int | None, repeat: bool, iperiod: int | None) -> None:
        self._library = library
        self.bitrate = bitrate or 4_000_000
        self.repeat = repeat
        self.iperiod = iperiod or 60
        self.width = self.height = 0
        self.firsttimestamp: int | None = None
        self._key_frames_requested = 0
        self._key_frames_generated = 0
        self._output: list[FakeOutput] = []
        self._ctx: Any = None
        self._pts = 0
        self.units = 0

    @property
    def output(self) -> list[FakeOutput]:
        return self._output

    @output.setter
    def output(self, value: FakeOutput) -> None:
        if not isinstance(value, FakeOutput):
            raise RuntimeError("Must pass Output")
        self._output = [value]

    def force_key_frame(self) -> None:
        self._key_frames_requested += 1

    def start(self) -> None:
        ctx = av.CodecContext.create("libx264", "w")
        assert isinstance(ctx, av.VideoCodecContext)
        ctx.width, ctx.height, ctx.pix_fmt = self.width, self.height, "yuv420p"
        ctx.time_base = Fraction(1, 1_000_000)
        ctx.framerate = Fraction(30)
        ctx.gop_size, ctx.max_b_frames, ctx.bit_rate = self.iperiod, 0, self.bitrate
        repeat = "1" if self.repeat and self._library.in_band_headers else "0"
        ctx.options = {"preset": "ultrafast", "tune": "zerolatency", "forced-idr": "1",
                       "x264-params": f"repeat-headers={repeat}:annexb=1"}
        ctx.open()
        self._ctx = ctx
        for out in self._output:
            out.start()

    def stop(self) -> None:
        self._ctx = None
        for out in self._output:
            out.stop()

    def encode(self, planes: np.ndarray[Any, Any], sensor_ns: int) -> None:
        ctx = self._ctx
        if ctx is None:
            return
        ts_us = sensor_ns // 1000
        if self.firsttimestamp is None:
            self.firsttimestamp = ts_us
        picture = av.VideoFrame.from_numpy_buffer(planes, format="yuv420p")
        picture.pts = ts_us - self.firsttimestamp
        if self._key_frames_requested > self._key_frames_generated:
            self._key_frames_generated += 1
            if self._library.honour_keyframe_requests:
                picture.pict_type = av.video.frame.PictureType.I
        for packet in ctx.encode(picture):
            data = bytes(packet)
            if not self._library.in_band_headers:  # x264 puts them before the first IDR even so
                data = b"".join(START_CODE + u for u in nal_units(data) if nal_type(u) not in (NAL_SPS, NAL_PPS))
            self.units += 1
            for out in self._output:
                out.outputframe(data, packet.is_keyframe, packet.pts)


class FakeCamera:
    """picamera2.Picamera2: a camera whose frames (a moving gradient) go to the started encoder on
    its own thread, paced at the configured frame duration."""

    def __init__(self, library: FakePicamera2Library, camera_num: int) -> None:
        if camera_num >= library.cameras_present:
            raise RuntimeError(f"camera {camera_num} not found")
        self._library = library
        self._config: dict[str, Any] = {}
        self._encoder: FakeH264Encoder | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.closed = False
        self.frames = 0
        library.opened.append(self)

    def create_video_configuration(self, main: dict[str, Any], buffer_count: int = 6,
                                   controls: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"main": dict(main), "buffer_count": buffer_count, "controls": dict(controls or {})}

    def configure(self, config: dict[str, Any]) -> None:
        self._config = config

    def start_encoder(self, encoder: FakeH264Encoder, output: FakeOutput, name: str = "main") -> None:
        if not self._config:
            raise RuntimeError("Camera has not been configured")
        encoder.output = output
        encoder.width, encoder.height = self._config[name]["size"]
        encoder.start()
        self._encoder = encoder

    def stop_encoder(self, encoder: FakeH264Encoder | None = None) -> None:
        if self._encoder is not None:
            self._encoder.stop()
        self._encoder = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="fake-picamera2", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def close(self) -> None:
        self.closed = True

    def _run(self) -> None:
        width, height = self._config["main"]["size"]
        period_ns = self._config["controls"]["FrameDurationLimits"][0] * 1000
        own_origin_ns = 5_000_000_000
        ramp = (np.arange(width, dtype=np.uint16)[None, :] + np.arange(height * 3 // 2)[:, None]).astype(np.uint8)
        index = 0
        while not self._stop.wait(period_ns / 1e9):
            own_ns = own_origin_ns + index * period_ns
            sensor_ns = time.monotonic_ns() if self._library.sensor_clock == "host" else own_ns
            planes = np.ascontiguousarray(np.roll(ramp, index * 2, axis=1))
            encoder = self._encoder
            if encoder is not None:
                encoder.encode(planes, sensor_ns)
            index += 1
            self.frames = index


def fake_driver(library: FakePicamera2Library) -> type[Picamera2Camera]:
    """The picamera2 camera driver with ``library`` where it would import picamera2."""

    class FakeLibraryPicamera2(Picamera2Camera):
        """picamera2 camera over a hand-written fake of the library."""

        def _library(self) -> Any:
            return library

    return FakeLibraryPicamera2


def v4l2_sysfs(root: Any, with_encoder: bool = True) -> str:
    """A /sys/class/video4linux with the Pi 4's M2M encoder node (or only a camera node)."""
    nodes = {"video0": "unicam-image"} | ({"video11": M2M_ENCODER_NAME} if with_encoder else {})
    for node, name in nodes.items():
        (root / node).mkdir(parents=True, exist_ok=True)
        (root / node / "name").write_text(name + "\n")
    return str(root)
