"""A Linux I2C adapter (``/dev/i2c-N``) through smbus2, as the small port the protocol code talks to."""

from __future__ import annotations

import importlib
import importlib.util
import os
from typing import Any, Protocol


class I2cError(OSError):
    """An I2C transfer failed (no ACK, bus error, adapter gone); carries the errno."""


class I2cPort(Protocol):
    """Raw combined transfers: the protocol modules (Lepton CCI, MLX90640, MAX17048) need no more.

    Tests pass a hand-written emulator of the chip instead of a bus.
    """

    def write(self, address: int, data: bytes) -> None: ...

    def write_read(self, address: int, data: bytes, length: int) -> bytes: ...

    def close(self) -> None: ...


def probe_bus(bus: int) -> str:
    """Why ``/dev/i2c-<bus>`` cannot be used here, or "" when it can."""
    if importlib.util.find_spec("smbus2") is None:
        return "library missing: pip install smbus2"
    path = f"/dev/i2c-{bus}"
    if not os.path.exists(path):
        return f"device absent: {path} (enable I2C: dtparam=i2c_arm=on)"
    if not os.access(path, os.R_OK | os.W_OK):
        return f"permission denied: {path} (add the service user to group i2c)"
    return ""


class SmbusPort:
    """``/dev/i2c-<bus>`` through smbus2's ``i2c_rdwr`` (repeated-start write-then-read).

    Not thread-safe: each driver owns its port and uses it from one thread.
    """

    def __init__(self, bus: int) -> None:
        try:
            smbus2: Any = importlib.import_module("smbus2")
        except ImportError as exc:
            raise I2cError(0, "smbus2 is not installed (pip install smbus2)") from exc
        self._msg = smbus2.i2c_msg
        try:
            self._bus = smbus2.SMBus(bus)
        except OSError as exc:
            raise I2cError(exc.errno or 0, f"opening /dev/i2c-{bus}: {exc.strerror}") from exc
        self._number = bus

    def write(self, address: int, data: bytes) -> None:
        try:
            self._bus.i2c_rdwr(self._msg.write(address, data))
        except OSError as exc:
            raise I2cError(exc.errno or 0, f"writing to 0x{address:02x} on i2c-{self._number}: {exc.strerror}") from exc

    def write_read(self, address: int, data: bytes, length: int) -> bytes:
        read = self._msg.read(address, length)
        try:
            self._bus.i2c_rdwr(self._msg.write(address, data), read)
        except OSError as exc:
            where = f"0x{address:02x} on i2c-{self._number}"
            raise I2cError(exc.errno or 0, f"reading from {where}: {exc.strerror}") from exc
        return bytes(list(read))

    def close(self) -> None:
        self._bus.close()
