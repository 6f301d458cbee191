"""Types shared by every HAL protocol: availability, driver status, the base sensor protocol."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


class SensorError(Exception):
    """A driver could not do what was asked (device gone, read failed, garbage from the device)."""


@dataclass(frozen=True, slots=True)
class Availability:
    """Whether a driver can be used on this machine, and if not, why (library missing, device absent...)."""

    usable: bool
    reason: str = ""


@runtime_checkable
class Device(Protocol):
    """What every driver offers besides its sensor-specific calls.

    ``open`` does the I/O that acquires the device and may raise :class:`SensorError`;
    ``close`` is idempotent. ``get_status`` is a pure getter that never blocks.
    """

    name: str

    def open(self) -> None: ...

    def close(self) -> None: ...

    def get_status(self) -> dict[str, object]: ...
