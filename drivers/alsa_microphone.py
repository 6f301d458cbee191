"""A microphone through ALSA, via sounddevice (PortAudio): 16-bit chunks, overruns counted as drops.

Why sounddevice and not pyalsaaudio: its wheel needs no compiler on the unit (only the system's
libportaudio2), its callback reports input overflow and the ADC time of each block, which is what
overrun accounting needs, and PortAudio's ALSA backend opens ``plughw``/``dsnoop`` devices by name.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from drivers.pacing import check_int, check_name
from drivers.registry import register
from hal.audio import AudioChunk
from hal.clock import Clock
from hal.common import Availability, SensorError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Position:
    first_sample: int
    dropped_before: int


class SampleCounter:
    """Where each block lands in the sample count, and how many samples an overrun lost.

    With the ADC time of each block (PortAudio's ``inputBufferAdcTime``) the loss is the gap
    between where the block starts and where the previous one ended; devices that report no ADC
    time (0) fall back to the host arrival times. Pure: times are arguments.
    """

    def __init__(self, rate_hz: int) -> None:
        self.rate_hz = rate_hz
        self.next_sample = 0
        self._expected_adc_s: float | None = None
        self._expected_host_ns: int | None = None
        self.overruns = 0
        self.lost_samples = 0

    def block(self, frames: int, adc_time_s: float, host_ns: int, overflow: bool) -> Position:
        lost = 0
        if overflow:
            self.overruns += 1
            if adc_time_s > 0 and self._expected_adc_s is not None:
                lost = max(0, round((adc_time_s - self._expected_adc_s) * self.rate_hz))
            elif self._expected_host_ns is not None:
                lost = max(0, round((host_ns - self._expected_host_ns) * self.rate_hz / 1e9) - frames)
        first = self.next_sample + lost
        self.next_sample = first + frames
        self.lost_samples += lost
        if adc_time_s > 0:
            self._expected_adc_s = adc_time_s + frames / self.rate_hz
        self._expected_host_ns = host_ns
        return Position(first, lost)

    def skip(self, frames: int) -> None:
        """A block the consumer had no room for: it is lost too, and the next chunk says so."""
        self.next_sample += frames
        self.lost_samples += frames


class Stream(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...

    def close(self) -> None: ...


StreamFactory = Callable[[Callable[..., None]], Stream]


def sounddevice_stream(device: str | int | None, rate_hz: int, channels: int, block: int) -> StreamFactory:
    def factory(callback: Callable[..., None]) -> Stream:
        try:
            sd: Any = importlib.import_module("sounddevice")
        except (ImportError, OSError) as exc:  # OSError: the PortAudio library itself is missing
            hint = "pip install sounddevice; apt install libportaudio2"
            raise SensorError(f"sounddevice unavailable ({exc}): {hint}") from exc
        try:
            stream: Stream = sd.InputStream(device=device, samplerate=rate_hz, channels=channels, dtype="int16",
                                            blocksize=block, latency="high", callback=callback)
        except Exception as exc:  # sounddevice raises PortAudioError (not an OSError) for every failure
            raise SensorError(f"opening ALSA input {device!r}: {exc}") from exc
        return stream

    return factory


@register("microphone", "alsa")
class AlsaMicrophone:
    """A microphone through ALSA (sounddevice/PortAudio), overruns counted as drops.

    Captures on PortAudio's thread into a bounded queue; ``read`` takes from it.

    A full queue (consumer too slow) and an ALSA overrun both become ``dropped_before`` on the
    next chunk. ``read`` is for one consumer thread; the others are safe from any thread.
    """

    def __init__(
        self,
        *,
        name: str,
        clock: Clock,
        device: str | int | None = None,
        sample_rate_hz: int = 48000,
        channels: int = 1,
        chunk_ms: int = 20,
        queue_chunks: int = 50,
        stream_factory: StreamFactory | None = None,
    ) -> None:
        self.name = check_name(name)
        self._clock = clock
        self._device = device
        self._rate = check_int("sample_rate_hz", sample_rate_hz, 8000, 192000)
        self._channels = check_int("channels", channels, 1, 8)
        self._block = self._rate * check_int("chunk_ms", chunk_ms, 5, 200) // 1000
        self._depth = check_int("queue_chunks", queue_chunks, 2, 1000)
        self._factory = stream_factory or sounddevice_stream(device, self._rate, self._channels, self._block)
        self._lock = threading.Lock()
        self._stream: Stream | None = None
        self._queue: queue.Queue[AudioChunk] = queue.Queue(self._depth)
        self._counter = SampleCounter(self._rate)
        self._index = 0
        self._pending_loss = 0
        self._last_error: str | None = None

    @property
    def sample_rate_hz(self) -> int:
        return self._rate

    @property
    def channels(self) -> int:
        return self._channels

    @classmethod
    def probe(cls) -> Availability:
        if importlib.util.find_spec("sounddevice") is None:
            return Availability(False, "library missing: pip install sounddevice")
        try:
            sd: Any = importlib.import_module("sounddevice")
            inputs = [d for d in sd.query_devices() if d.get("max_input_channels", 0) > 0]
        except (OSError, ImportError) as exc:
            return Availability(False, f"library missing: PortAudio ({exc}); apt install libportaudio2")
        except Exception as exc:  # PortAudioError
            return Availability(False, f"device absent: {exc}")
        if not inputs:
            return Availability(False, "device absent: no ALSA capture device (arecord -l)")
        return Availability(True)

    def open(self) -> None:
        with self._lock:
            if self._stream is not None:
                return
            self._queue = queue.Queue(self._depth)
            self._counter = SampleCounter(self._rate)
            self._index = self._pending_loss = 0
            try:
                stream = self._factory(self._callback)
                stream.start()
            except SensorError as exc:
                self._last_error = str(exc)
                raise SensorError(f"{self.name}: {exc}") from exc
            self._stream = stream

    def close(self) -> None:
        with self._lock:
            stream, self._stream = self._stream, None
        if stream is not None:
            stream.stop()
            stream.close()

    def __enter__(self) -> AlsaMicrophone:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _callback(self, indata: npt.NDArray[np.int16], frames: int, time_info: Any, status: Any) -> None:
        """PortAudio's thread: never raises, never blocks."""
        now = self._clock.monotonic_ns()
        adc_s = float(getattr(time_info, "inputBufferAdcTime", 0.0) or 0.0)
        pos = self._counter.block(frames, adc_s, now, bool(getattr(status, "input_overflow", False)))
        chunk = AudioChunk(
            index=self._index, mono_ns=now, sensor_ns=round(adc_s * 1e9) if adc_s > 0 else now,
            sample_rate_hz=self._rate, channels=self._channels, first_sample=pos.first_sample,
            samples=np.array(indata, dtype=np.int16).reshape(frames, self._channels),
            dropped_before=pos.dropped_before + self._pending_loss,
        )  # fmt: skip
        try:
            self._queue.put_nowait(chunk)
        except queue.Full:
            self._counter.lost_samples += frames
            self._pending_loss += frames
            return
        self._pending_loss = 0
        self._index += 1

    def read(self, timeout_s: float) -> AudioChunk | None:
        """The next chunk, waiting up to ``timeout_s`` seconds (0 or less polls); None on timeout."""
        if self._stream is None:
            raise SensorError(f"{self.name}: read while closed")
        try:
            return self._queue.get(timeout=timeout_s) if timeout_s > 0 else self._queue.get_nowait()
        except queue.Empty:
            return None

    def get_status(self) -> dict[str, object]:
        c = self._counter
        return {
            "name": self.name,
            "driver": "alsa",
            "open": self._stream is not None,
            "device": self._device,
            "sample_rate_hz": self._rate,
            "chunks": self._index,
            "overruns": c.overruns,
            "dropped": c.lost_samples,
            "queued": self._queue.qsize(),
            "last_error": self._last_error,
        }
