"""A microphone that plays a 16-bit PCM WAV file at the file's own sample rate."""

from __future__ import annotations

import math
import threading
import wave
from fractions import Fraction
from pathlib import Path

import numpy as np
import numpy.typing as npt

from drivers.pacing import PacedDevice, check_bool, check_float, check_path
from drivers.registry import register
from hal.audio import AudioChunk
from hal.clock import Clock
from hal.common import SensorError


@register("microphone", "replay")
class ReplayMicrophone(PacedDevice):
    """Plays recorded audio through the live pipeline, paced like the sound card.

    The sample rate and channel count are the file's, read from its header when the driver is
    created (so a bad ``path`` is a config error) and again at ``open``. Chunk i is read from
    sample ``i * chunk`` (wrapping when looping), so overruns skip by seeking. ``read`` is for
    one consumer thread; ``close`` from another waits for a file read in progress.
    """

    def __init__(
        self,
        *,
        name: str,
        clock: Clock,
        path: str | Path,
        loop: bool = True,
        chunk_ms: float = 20.0,
        queue_s: float = 0.5,
    ) -> None:
        super().__init__(name=name, clock=clock, rate_hz=Fraction(50), queue_depth=1)  # both set at open
        self._path = check_path("path", path)
        self._loop = check_bool("loop", loop)
        self._chunk_ms = check_float("chunk_ms", chunk_ms, 1.0, 1000.0)
        self._queue_s = check_float("queue_s", queue_s, 0.0, 60.0)
        self._file_lock = threading.Lock()
        self._wav: wave.Wave_read | None = None
        try:
            self._rate, self._channels, self._frames = _inspect(self._path)
        except ValueError as exc:
            raise ValueError(f"path: {exc}") from None
        self._chunk = max(1, round(self._rate * self._chunk_ms / 1000))
        self._dropped_samples = 0

    @property
    def sample_rate_hz(self) -> int:
        return self._rate

    @property
    def channels(self) -> int:
        return self._channels

    def _open_source(self) -> None:
        try:
            self._rate, self._channels, self._frames = _inspect(self._path)
            wav = wave.open(str(self._path), "rb")  # noqa: SIM115 (kept open until close())
        except (ValueError, OSError, wave.Error, EOFError) as exc:
            raise self._fail(f"opening WAV file {self._path}: {exc}") from exc
        self._wav = wav
        self._chunk = max(1, round(self._rate * self._chunk_ms / 1000))
        self._rate_hz = Fraction(self._rate, self._chunk)
        self._queue_depth = max(1, round(self._queue_s * self._rate / self._chunk))
        self._limit = None if self._loop else math.ceil(self._frames / self._chunk)
        self._dropped_samples = 0

    def _close_source(self) -> None:
        with self._file_lock:
            if self._wav is not None:
                self._wav.close()
            self._wav = None

    def read(self, timeout_s: float) -> AudioChunk | None:
        """The next chunk, waiting up to ``timeout_s`` (0 polls); None on timeout or after the end
        of a file that does not loop. The last chunk of such a file may be short."""
        slot = self._next_slot(timeout_s)
        if slot is None:
            return None
        first = slot.index * self._chunk
        samples = self._samples(first)
        self._dropped_samples += slot.dropped_before * self._chunk
        return AudioChunk(
            index=slot.index,
            mono_ns=slot.due_ns,
            sensor_ns=first * 1_000_000_000 // self._rate,
            sample_rate_hz=self._rate,
            channels=self._channels,
            first_sample=first,
            samples=samples,
            dropped_before=slot.dropped_before * self._chunk,
        )

    def _samples(self, first: int) -> npt.NDArray[np.int16]:
        parts: list[bytes] = []
        wanted = self._chunk if self._loop else min(self._chunk, self._frames - first)
        pos = first % self._frames
        with self._file_lock:
            if self._wav is None:
                raise SensorError(f"{self.name}: closed during read")
            try:
                while wanted > 0:
                    self._wav.setpos(pos)
                    count = min(wanted, self._frames - pos)
                    parts.append(self._wav.readframes(count))
                    wanted, pos = wanted - count, 0
            except (OSError, wave.Error, EOFError) as exc:
                raise self._fail(f"reading {self._path}: {exc}") from exc
        data = np.frombuffer(b"".join(parts), dtype="<i2").astype(np.int16).reshape(-1, self._channels)
        data.flags.writeable = False
        return data

    def _status_extra(self) -> dict[str, object]:
        return {
            "driver": "replay",
            "path": str(self._path),
            "sample_rate_hz": self._rate,
            "channels": self._channels,
            "dropped_samples": self._dropped_samples,
        }


def _inspect(path: Path) -> tuple[int, int, int]:
    """Sample rate, channels and length of a 16-bit PCM WAV file; ValueError saying what is wrong."""
    try:
        with wave.open(str(path), "rb") as wav:
            rate, channels, width, frames = wav.getframerate(), wav.getnchannels(), wav.getsampwidth(), wav.getnframes()
    except (OSError, wave.Error, EOFError) as exc:
        raise ValueError(f"cannot read WAV file {path}: {exc}") from None
    if width != 2 or frames == 0 or rate <= 0:
        raise ValueError(f"{path}: need 16-bit PCM with at least one sample (got {8 * width}-bit, {frames} samples)")
    return rate, channels, frames
