"""A simulated microphone: a steady tone plus noise, 16-bit, in fixed-size chunks."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import numpy.typing as npt

from drivers.pacing import PacedDevice, check_float, check_int
from drivers.registry import register
from hal.audio import AudioChunk
from hal.clock import Clock


@register("microphone", "sim")
class SimMicrophone(PacedDevice):
    """A deterministic stand-in for the body camera's microphone.

    Chunk i holds samples ``i * chunk_samples`` onwards, computed from the sample count (so
    the tone is phase-continuous) and noise seeded by (seed, i). A chunk is due when its last
    sample would have been captured; ``mono_ns`` is that time, ``sensor_ns`` the sample clock
    at its first sample. After an overrun ``dropped_before`` counts the samples lost.
    One consumer thread.
    """

    def __init__(
        self,
        *,
        name: str,
        clock: Clock,
        sample_rate_hz: int = 48_000,
        channels: int = 1,
        chunk_samples: int = 960,
        tone_hz: float = 1000.0,
        tone_level: float = 0.25,
        noise_level: float = 0.01,
        seed: int = 0,
        queue_s: float = 0.5,
    ) -> None:
        self._sample_rate_hz = check_int("sample_rate_hz", sample_rate_hz, 1000, 384_000)
        self._channels = check_int("channels", channels, 1, 8)
        self._chunk = check_int("chunk_samples", chunk_samples, 16, self._sample_rate_hz)
        self._tone_hz = check_float("tone_hz", tone_hz, 0.0, self._sample_rate_hz / 2)
        self._tone_level = check_float("tone_level", tone_level, 0.0, 1.0)
        self._noise_level = check_float("noise_level", noise_level, 0.0, 1.0)
        self._seed = check_int("seed", seed, 0, 2**32 - 1)
        queue_s = check_float("queue_s", queue_s, 0.0, 60.0)
        depth = max(1, round(queue_s * self._sample_rate_hz / self._chunk))
        super().__init__(name=name, clock=clock, rate_hz=Fraction(self._sample_rate_hz, self._chunk), queue_depth=depth)
        self._dropped_samples = 0

    @property
    def sample_rate_hz(self) -> int:
        return self._sample_rate_hz

    @property
    def channels(self) -> int:
        return self._channels

    def _open_source(self) -> None:
        self._dropped_samples = 0

    def read(self, timeout_s: float) -> AudioChunk | None:
        """The next chunk, waiting up to ``timeout_s`` (0 polls); None on timeout."""
        slot = self._next_slot(timeout_s)
        if slot is None:
            return None
        first = slot.index * self._chunk
        self._dropped_samples += slot.dropped_before * self._chunk
        return AudioChunk(
            index=slot.index,
            mono_ns=slot.due_ns,
            sensor_ns=first * 1_000_000_000 // self._sample_rate_hz,
            sample_rate_hz=self._sample_rate_hz,
            channels=self._channels,
            first_sample=first,
            samples=self.render(slot.index),
            dropped_before=slot.dropped_before * self._chunk,
        )

    def render(self, index: int) -> npt.NDArray[np.int16]:
        """Chunk ``index`` as (chunk_samples, channels) int16: a pure function of the index and seed."""
        n = np.arange(index * self._chunk, (index + 1) * self._chunk, dtype=np.int64)
        # Reduce the phase modulo one period in integers first so float precision never decays.
        phase = (n * round(self._tone_hz * 1000) % (self._sample_rate_hz * 1000)) / (self._sample_rate_hz * 1000)
        signal = self._tone_level * np.sin(2 * np.pi * phase)
        if self._noise_level > 0:
            signal += np.random.default_rng([self._seed, index]).normal(0.0, self._noise_level, self._chunk)
        mono = np.clip(np.rint(signal * 32767), -32768, 32767).astype(np.int16)
        out = np.repeat(mono[:, np.newaxis], self._channels, axis=1)
        out.flags.writeable = False
        return out

    def _status_extra(self) -> dict[str, object]:
        return {
            "driver": "sim",
            "sample_rate_hz": self._sample_rate_hz,
            "channels": self._channels,
            "dropped_samples": self._dropped_samples,
        }
