"""The radiometric thermal camera protocol and its frame type (FLIR Lepton 3.5, MLX90640 class)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from hal.common import Device


@dataclass(frozen=True, slots=True)
class ThermalFrame:
    """One radiometric frame: ``data`` is (height, width) uint16 in centikelvin (0.01 K).

    ``fpa_temp_ck`` is the sensor's focal-plane temperature, None when the device has none.
    """

    index: int
    mono_ns: int
    sensor_ns: int
    width: int
    height: int
    data: npt.NDArray[np.uint16] = field(repr=False)
    fpa_temp_ck: int | None = None
    dropped_before: int = 0


class ThermalCamera(Device, Protocol):
    """``read(timeout_s)`` as for :class:`hal.camera.Camera`. ``rate_hz`` is the nominal rate."""

    @property
    def width(self) -> int: ...

    @property
    def height(self) -> int: ...

    @property
    def rate_hz(self) -> float: ...

    def read(self, timeout_s: float) -> ThermalFrame | None: ...
