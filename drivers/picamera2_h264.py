"""picamera2's own H.264 encoder as a stream of encoded units with the sensor's timestamps.

The Raspberry Pi's ISP hands each frame to the V4L2 M2M encoder as a dmabuf; picamera2's
``H264Encoder`` calls its outputs' ``outputframe(bytes, keyframe, timestamp_us)`` from its own
thread. No frame passes through Python, only the encoded bytes. The decisions (placing sensor
time on the host clock, judging a probe) are pure functions here; ``Picamera2H264`` is the shell.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from drivers.h264_annexb import parameter_sets
from hal.camera import EncodedVideo, H264Settings
from hal.common import SensorError

log = logging.getLogger(__name__)

NS_PER_US = 1000
# A sensor timestamp at most this far behind the host's monotonic clock when its unit arrives is
# taken to be on that clock (libcamera stamps with the kernel's monotonic time on a Pi).
MAX_PIPELINE_NS = 1_000_000_000
QUEUE_UNITS = 60  # two seconds at 30 fps between picamera2's encoder thread and the sensor thread
# The probe: the unit after which a keyframe is asked for, how soon after the units already
# waiting it must come (the request reaches the encoder with the next frame it is handed), and
# the most units it reads.
PROBE_FORCE_AT = 4
PROBE_KEYFRAME_WITHIN = 4
PROBE_UNITS_MAX = 40


def host_offset_ns(sensor_ns: int, arrival_ns: int) -> int:
    """What to add to a sensor timestamp to place it on the host monotonic clock, from the first
    unit of a run: 0 when the sensor stamps with the host's clock (the unit arrives after its
    capture, within MAX_PIPELINE_NS), else the first unit's arrival anchors the sensor's clock,
    whose spacing is kept (the bias is then that unit's pipeline delay, the same for every unit)."""
    lag = arrival_ns - sensor_ns
    return 0 if 0 <= lag <= MAX_PIPELINE_NS else lag


def judge_probe(units: list[tuple[bool, bytes]], forced_at: int, backlog: int) -> tuple[bytes | None, str]:
    """(the stream's SPS/PPS, "" if usable else what went wrong) from the ``(keyframe, data)``
    units of a probe whose GOP is longer than the probe, so that only the request can explain a
    keyframe after the first: the request was made after ``forced_at`` units were read, with
    ``backlog`` more already waiting, so a keyframe must come within PROBE_KEYFRAME_WITHIN units
    after those."""
    if not units:
        return None, "the encoder gave no units"
    first_key, first = units[0]
    header = parameter_sets(first)
    if not first_key or header is None:
        return None, "the first unit is not a keyframe with SPS/PPS in-band (picamera2 H264Encoder repeat=True)"
    if any(key for key, _ in units[1:forced_at]):
        return None, "keyframes came unasked (the GOP is not honoured)"
    deadline = forced_at + backlog + PROBE_KEYFRAME_WITHIN
    if not any(key for key, _ in units[forced_at:deadline]):
        got = f" (the encoder gave {len(units)} units)" if len(units) < deadline else ""
        return None, f"a requested keyframe (force_key_frame) did not come within {PROBE_KEYFRAME_WITHIN} frames{got}"
    return header, ""


@dataclass(frozen=True, slots=True)
class Unit:
    data: bytes
    keyframe: bool
    sensor_ns: int
    dropped_before: int


class UnitQueue:
    """Units from picamera2's encoder thread to the sensor thread, bounded.

    ``put`` runs on the encoder thread and never blocks or raises (like picamera2's own outputs).
    When the reader is too late the unit is dropped, and so is every unit after it up to the next
    keyframe (they cannot be decoded without it); ``wants_keyframe`` then tells the reader to ask
    the encoder for one. Drops are counted onto the next unit kept.
    """

    def __init__(self, max_units: int = QUEUE_UNITS) -> None:
        self._units: collections.deque[Unit] = collections.deque()
        self._max = max_units
        self._cond = threading.Condition()
        self._dropping = False
        self._dropped = 0
        self._dropped_total = 0
        self._wants_keyframe = False

    def put(self, data: bytes, keyframe: bool, sensor_ns: int) -> None:
        with self._cond:
            if self._dropping and keyframe:
                self._dropping = False
            if self._dropping or len(self._units) >= self._max:
                self._dropping = True
                self._wants_keyframe = True
                self._dropped += 1
                self._dropped_total += 1
                return
            self._units.append(Unit(data, keyframe, sensor_ns, self._dropped))
            self._dropped = 0
            self._cond.notify()

    def get(self, timeout_s: float) -> Unit | None:
        """The oldest unit, waiting up to ``timeout_s`` (0 polls); None when none came."""
        with self._cond:
            if not self._units:
                self._cond.wait(max(timeout_s, 0.0))
            return self._units.popleft() if self._units else None

    def take_keyframe_wish(self) -> bool:
        with self._cond:
            wish, self._wants_keyframe = self._wants_keyframe, False
            return wish

    def __len__(self) -> int:
        with self._cond:
            return len(self._units)

    @property
    def dropped_total(self) -> int:
        with self._cond:
            return self._dropped_total


def sink_output(base: type, queue: UnitQueue, first_us: Callable[[], int | None]) -> Any:
    """An instance of picamera2's ``Output`` class ``base`` (its encoders accept no other) that
    puts each encoded picture into ``queue``, its sensor time rebuilt from the encoder's
    ``firsttimestamp`` (picamera2 hands out microseconds since the first frame)."""

    class QueueOutput(base):  # type: ignore[misc,valid-type]
        def outputframe(self, frame: bytes | None, keyframe: bool = True, timestamp: int | None = None,
                        packet: Any = None, audio: bool = False) -> None:
            if audio or frame is None or timestamp is None:
                return
            queue.put(bytes(frame), bool(keyframe), ((first_us() or 0) + int(timestamp)) * NS_PER_US)

    return QueueOutput()


class Picamera2H264:
    """picamera2's ``H264Encoder`` on one configured ``Picamera2``: ``start`` before the camera
    starts, ``read`` on the sensor thread, ``stop`` after the camera stops. IDR every
    ``settings.gop_frames`` and on ``force_keyframe``, SPS/PPS repeated before each IDR."""

    def __init__(self, library: Any, cam: Any, settings: H264Settings, name: str,
                 monotonic_ns: Callable[[], int]) -> None:
        self._library = library
        self._cam = cam
        self._settings = settings
        self._name = name
        self._monotonic_ns = monotonic_ns
        self._queue = UnitQueue()
        self._encoder: Any = None
        self._offset_ns: int | None = None
        self._index = 0
        self._last_mono_ns: int | None = None
        self.keyframes_forced = 0

    def start(self) -> None:
        encoder = self._library.encoders.H264Encoder(bitrate=self._settings.bitrate_bps, repeat=True,
                                                     iperiod=self._settings.gop_frames)
        if not callable(getattr(encoder, "force_key_frame", None)):
            raise SensorError(f"{self._name}: this picamera2 cannot force a keyframe (H264Encoder.force_key_frame);"
                              " update python3-picamera2")
        output = sink_output(self._library.outputs.Output, self._queue, lambda: getattr(encoder, "firsttimestamp",
                                                                                         None))
        self._cam.start_encoder(encoder, output, name="main")
        self._encoder = encoder

    def stop(self) -> None:
        encoder, self._encoder = self._encoder, None
        if encoder is not None:
            self._cam.stop_encoder(encoder)

    @property
    def backlog(self) -> int:
        """Units encoded and not yet read."""
        return len(self._queue)

    def force_keyframe(self) -> None:
        if self._encoder is not None:
            self._encoder.force_key_frame()
            self.keyframes_forced += 1

    def read(self, timeout_s: float) -> EncodedVideo | None:
        """The next encoded unit on the host monotonic timeline, or None within ``timeout_s``."""
        if self._queue.take_keyframe_wish():
            self.force_keyframe()  # units were dropped: decoding resumes at the next keyframe
        unit = self._queue.get(timeout_s)
        if unit is None:
            return None
        if self._offset_ns is None:
            self._offset_ns = host_offset_ns(unit.sensor_ns, self._monotonic_ns())
        mono_ns = unit.sensor_ns + self._offset_ns
        if self._last_mono_ns is not None and mono_ns <= self._last_mono_ns:
            raise SensorError(f"{self._name}: sensor timestamp {unit.sensor_ns} does not follow the last one")
        self._last_mono_ns = mono_ns
        index = self._index + unit.dropped_before
        self._index = index + 1
        return EncodedVideo(self._name, index, mono_ns, unit.sensor_ns, unit.keyframe, unit.data,
                            unit.dropped_before)

    def get_status(self) -> dict[str, object]:
        return {"units": self._index, "dropped": self._queue.dropped_total, "backlog": len(self._queue),
                "keyframes_forced": self.keyframes_forced,
                "clock": None if self._offset_ns is None else ("sensor" if self._offset_ns == 0 else "anchored")}
