"""The microphone protocol and its sample type."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from hal.common import Device


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """Consecutive signed 16-bit samples, shape (frames, channels).

    ``first_sample`` counts samples since ``open``; a jump (overrun) shows in
    ``dropped_before`` as a number of samples lost.
    """

    index: int
    mono_ns: int
    sensor_ns: int
    sample_rate_hz: int
    channels: int
    first_sample: int
    samples: npt.NDArray[np.int16] = field(repr=False)
    dropped_before: int = 0


class Microphone(Device, Protocol):
    """``read(timeout_s)`` returns the next chunk or None on timeout."""

    @property
    def sample_rate_hz(self) -> int: ...

    @property
    def channels(self) -> int: ...

    def read(self, timeout_s: float) -> AudioChunk | None: ...
