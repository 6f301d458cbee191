"""The FLIR Lepton's command and control interface (CCI) over I2C: radiometry, telemetry, FFC.

The CCI is a register file at I2C address 0x2A with 16-bit big-endian registers: STATUS
(0x0002; bit 0 busy, bit 2 booted, bits 15-8 the signed result code), COMMAND (0x0004),
DATA LENGTH (0x0006, in words) and DATA 0-15 (0x0008...). A command word is the module base
(SYS 0x0200, VID 0x0300, OEM 0x4800, RAD 0x4E00; OEM and RAD carry the 0x4000 protection
bit), the command ID, and the type in bits 1-0 (GET 0, SET 1, RUN 2). 32-bit values go low
word first. The caller polls until not busy, writes data and length, writes the command,
polls again, then checks the result and reads the data.
"""

from __future__ import annotations

from drivers.i2c_port import I2cError, I2cPort
from hal.clock import Clock

ADDRESS = 0x2A
REG_STATUS = 0x0002
REG_COMMAND = 0x0004
REG_DATA_LENGTH = 0x0006
REG_DATA0 = 0x0008

GET, SET, RUN = 0, 1, 2

SYS_FPA_TEMP_K100 = 0x0214
SYS_TELEMETRY_ENABLE = 0x0218
SYS_TELEMETRY_LOCATION = 0x021C  # 0 header, 1 footer
SYS_RUN_FFC = 0x0240
RAD_ENABLE = 0x4E10
RAD_TLINEAR_ENABLE = 0x4EC0
RAD_TLINEAR_RESOLUTION = 0x4EC4  # 0: 0.1 K per count, 1: 0.01 K per count

STATUS_BUSY = 0x0001
STATUS_BOOTED = 0x0004

RESULTS = {
    -1: "error", -2: "not ready", -3: "range error", -4: "checksum error", -5: "bad argument pointer",
    -6: "data size error", -7: "undefined function", -8: "function not yet implemented", -9: "data out of range",
    -10: "command not allowed", -15: "out of range for the current mode", -16: "uninitialised",
}  # fmt: skip


class CciError(Exception):
    """The Lepton refused a command, stayed busy, or the I2C transfer failed."""


def result_code(status: int) -> int:
    """The signed 8-bit result in STATUS bits 15-8 (0 is LEP_OK)."""
    code = (status >> 8) & 0xFF
    return code - 256 if code >= 128 else code


def words_of(value: int, count: int = 2) -> list[int]:
    """An unsigned value as ``count`` words, low word first, as the Lepton's enums and 32-bit values travel."""
    return [(value >> (16 * i)) & 0xFFFF for i in range(count)]


def value_of(words: list[int]) -> int:
    return sum(w << (16 * i) for i, w in enumerate(words))


class LeptonCci:
    """Commands to one Lepton over an :class:`I2cPort`. Waiting uses the injected clock.

    Not thread-safe: the thermal driver owns it and uses it from its open/read thread.
    """

    def __init__(self, port: I2cPort, clock: Clock, *, address: int = ADDRESS, timeout_s: float = 5.0) -> None:
        self._port = port
        self._clock = clock
        self._address = address
        self._timeout_s = timeout_s

    def _write_reg(self, reg: int, words: list[int]) -> None:
        payload = reg.to_bytes(2, "big") + b"".join(w.to_bytes(2, "big") for w in words)
        try:
            self._port.write(self._address, payload)
        except I2cError as exc:
            raise CciError(f"Lepton CCI: writing register 0x{reg:04x}: {exc}") from exc

    def _read_regs(self, reg: int, count: int) -> list[int]:
        try:
            raw = self._port.write_read(self._address, reg.to_bytes(2, "big"), 2 * count)
        except I2cError as exc:
            raise CciError(f"Lepton CCI: reading register 0x{reg:04x}: {exc}") from exc
        return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, 2 * count, 2)]

    def status(self) -> int:
        return self._read_regs(REG_STATUS, 1)[0]

    def wait_ready(self) -> int:
        """Poll STATUS until the camera has booted and is not busy; return the STATUS word."""
        waited_s = 0.0
        while True:
            status = self.status()
            if status & STATUS_BOOTED and not status & STATUS_BUSY:
                return status
            if waited_s >= self._timeout_s:
                raise CciError(f"Lepton CCI: still busy or booting after {self._timeout_s} s (status 0x{status:04x})")
            self._clock.sleep(0.005)
            waited_s += 0.005

    def _command(self, command: int, kind: int, data: list[int], length: int) -> None:
        self.wait_ready()
        if data:
            self._write_reg(REG_DATA0, data)
        self._write_reg(REG_DATA_LENGTH, [length])
        self._write_reg(REG_COMMAND, [(command & ~0x3) | kind])
        code = result_code(self.wait_ready())
        if code != 0:
            meaning = RESULTS.get(code, "unknown result")
            raise CciError(f"Lepton CCI: command 0x{command | kind:04x} failed with {code} ({meaning})")

    def get(self, command: int, words: int) -> list[int]:
        self._command(command, GET, [], words)
        return self._read_regs(REG_DATA0, words)

    def set(self, command: int, words: list[int]) -> None:
        self._command(command, SET, words, len(words))

    def run(self, command: int) -> None:
        self._command(command, RUN, [], 0)

    # --- what the drivers use -----------------------------------------------------------------

    def fpa_temp_ck(self) -> int:
        """The focal plane array temperature in centikelvin (the Lepton reports kelvin x 100)."""
        return self.get(SYS_FPA_TEMP_K100, 1)[0]

    def enable_radiometry(self, resolution_ck: int = 1) -> None:
        """Radiometry on, TLinear on: pixels become scene temperatures, 0.01 K (or 0.1 K) per count."""
        if resolution_ck not in (1, 10):
            raise ValueError("TLinear resolution is 1 (0.01 K) or 10 (0.1 K) centikelvin per count")
        self.set(RAD_ENABLE, words_of(1))
        self.set(RAD_TLINEAR_ENABLE, words_of(1))
        self.set(RAD_TLINEAR_RESOLUTION, words_of(1 if resolution_ck == 1 else 0))

    def tlinear_resolution_ck(self) -> int:
        return 1 if value_of(self.get(RAD_TLINEAR_RESOLUTION, 2)) == 1 else 10

    def set_telemetry(self, enabled: bool, footer: bool = True) -> None:
        self.set(SYS_TELEMETRY_LOCATION, words_of(1 if footer else 0))
        self.set(SYS_TELEMETRY_ENABLE, words_of(1 if enabled else 0))

    def run_ffc(self) -> None:
        """A flat-field correction: the shutter closes for a fraction of a second (frames freeze)."""
        self.run(SYS_RUN_FFC)
