"""The GNSS receiver protocol and the fix type."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from hal.common import Device


class FixMode(enum.IntEnum):
    NO_FIX = 1
    FIX_2D = 2
    FIX_3D = 3


@dataclass(frozen=True, slots=True)
class GnssFix:
    """A position report. ``utc_ns`` is the receiver's UTC time (None before it knows it).

    Accuracies are 1-sigma estimates in metres, None when the receiver gives none.
    """

    mono_ns: int
    utc_ns: int | None
    mode: FixMode
    lat_deg: float | None = None
    lon_deg: float | None = None
    alt_m: float | None = None
    h_acc_m: float | None = None
    v_acc_m: float | None = None
    speed_mps: float | None = None
    track_deg: float | None = None
    satellites: int | None = None


class Gnss(Device, Protocol):
    """``read(timeout_s)`` returns the next report (fix or no-fix) or None on timeout."""

    def read(self, timeout_s: float) -> GnssFix | None: ...
