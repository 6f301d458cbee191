"""FLIR Lepton 3.5 directly on the SPI bus (VoSPI, via spidev) with its CCI on I2C (via smbus2)."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import threading
from typing import Any, Protocol

import numpy as np

from drivers import lepton_vospi as vospi
from drivers.i2c_port import I2cError, I2cPort, SmbusPort, probe_bus
from drivers.lepton_cci import CciError, LeptonCci
from drivers.pacing import check_bool, check_int, check_name
from drivers.registry import register
from hal.clock import Clock
from hal.common import Availability, SensorError
from hal.thermal import ThermalFrame

log = logging.getLogger(__name__)

RATE_HZ = 8.7  # unique frames per second of a Lepton 3.5 (export-compliant < 9 Hz)
FPA_POLL_FRAMES = 9  # without telemetry, ask the CCI for the FPA temperature about once a second


class SpiPort(Protocol):
    """The part of ``spidev.SpiDev`` this driver uses; tests pass an emulated Lepton."""

    def readbytes(self, length: int) -> list[int]: ...

    def close(self) -> None: ...


def _open_spidev(bus: int, device: int, speed_hz: int) -> SpiPort:
    try:
        spidev: Any = importlib.import_module("spidev")
    except ImportError as exc:
        raise SensorError("spidev is not installed (pip install spidev)") from exc
    spi = spidev.SpiDev()
    try:
        spi.open(bus, device)
    except OSError as exc:
        raise SensorError(f"opening /dev/spidev{bus}.{device}: {exc.strerror}") from exc
    spi.mode = 3  # CPOL=1, CPHA=1 as the Lepton requires
    spi.max_speed_hz = speed_hz
    port: SpiPort = spi
    return port


@register("thermal", "lepton-spi")
class LeptonSpi:
    """A FLIR Lepton 3.5 on SPI (VoSPI) with its CCI on I2C, radiometric (TLinear) centikelvin.

    Read packet by packet; radiometry and telemetry are set up through the CCI.

    ``read`` must be called continuously: the Lepton only waits about three frame periods
    before the host loses sync, which the parser detects; the driver then idles chip select
    for 185 ms and starts over. ``read`` is for one consumer thread; ``open``/``close`` must
    not race it; ``get_status`` is safe from any thread.
    """

    def __init__(
        self,
        *,
        name: str,
        clock: Clock,
        spi_bus: int = 0,
        spi_device: int = 0,
        speed_hz: int = 18_000_000,
        i2c_bus: int = 1,
        telemetry: str = "footer",
        radiometry: bool = True,
        ffc_on_open: bool = False,
        packets_per_read: int = 20,
        spi: SpiPort | None = None,
        i2c: I2cPort | None = None,
    ) -> None:
        self.name = check_name(name)
        self._clock = clock
        self._spi_bus = check_int("spi_bus", spi_bus, 0, 15)
        self._spi_device = check_int("spi_device", spi_device, 0, 15)
        self._speed_hz = check_int("speed_hz", speed_hz, 2_200_000, 20_000_000)
        self._i2c_bus = check_int("i2c_bus", i2c_bus, 0, 255)
        try:
            self._telemetry = vospi.Telemetry(telemetry)
        except ValueError:
            raise ValueError(f"telemetry: expected 'off', 'header' or 'footer', got {telemetry!r}") from None
        self._radiometry = check_bool("radiometry", radiometry)
        self._ffc_on_open = check_bool("ffc_on_open", ffc_on_open)
        self._packets_per_read = check_int("packets_per_read", packets_per_read, 1, 24)  # 24*164 < spidev's 4096
        self._given_spi, self._given_i2c = spi, i2c
        self._lock = threading.Lock()
        self._spi: SpiPort | None = None
        self._i2c: I2cPort | None = None
        self._cci: LeptonCci | None = None
        self._assembler = vospi.VospiAssembler(self._telemetry)
        self._resolution_ck = 1
        self._index = 0
        self._rx = b""  # packets of the last transfer not parsed yet
        self._fpa_ck: int | None = None
        self._last_error: str | None = None

    @property
    def width(self) -> int:
        return vospi.WIDTH

    @property
    def height(self) -> int:
        return vospi.HEIGHT

    @property
    def rate_hz(self) -> float:
        return RATE_HZ

    @classmethod
    def probe(cls) -> Availability:
        if importlib.util.find_spec("spidev") is None:
            return Availability(False, "library missing: pip install spidev")
        path = "/dev/spidev0.0"
        if not os.path.exists(path):
            return Availability(False, f"device absent: {path} (enable SPI: dtparam=spi=on)")
        if not os.access(path, os.R_OK | os.W_OK):
            return Availability(False, f"permission denied: {path} (add the service user to group spi)")
        why = probe_bus(1)
        return Availability(not why, why)

    def open(self) -> None:
        """Open SPI and I2C, set the Lepton up over the CCI (radiometry, telemetry), optionally run an FFC."""
        with self._lock:
            if self._spi is not None:
                return
            try:
                i2c = self._given_i2c or SmbusPort(self._i2c_bus)
            except I2cError as exc:
                raise self._fail(str(exc)) from exc
            cci = LeptonCci(i2c, self._clock)
            try:
                if self._radiometry:
                    cci.enable_radiometry()
                    self._resolution_ck = cci.tlinear_resolution_ck()
                cci.set_telemetry(self._telemetry is not vospi.Telemetry.OFF,
                                  footer=self._telemetry is not vospi.Telemetry.HEADER)
                if self._ffc_on_open:
                    cci.run_ffc()
                spi = self._given_spi or _open_spidev(self._spi_bus, self._spi_device, self._speed_hz)
            except (CciError, SensorError) as exc:
                if self._given_i2c is None:
                    i2c.close()
                raise self._fail(str(exc)) from exc
            self._spi, self._i2c, self._cci = spi, i2c, cci
            self._assembler = vospi.VospiAssembler(self._telemetry)
            self._index = 0
            self._rx = b""
            # start in sync: chip select idle for 185 ms before the first packet
            self._clock.sleep(vospi.RESYNC_IDLE_S)

    def close(self) -> None:
        with self._lock:
            spi, i2c = self._spi, self._i2c
            self._spi = self._i2c = self._cci = None
        if spi is not None and self._given_spi is None:
            spi.close()
        if i2c is not None and self._given_i2c is None:
            i2c.close()

    def __enter__(self) -> LeptonSpi:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run_ffc(self) -> None:
        """A flat-field correction now (the shutter closes briefly)."""
        cci = self._cci
        if cci is None:
            raise SensorError(f"{self.name}: FFC while closed")
        try:
            cci.run_ffc()
        except CciError as exc:
            raise self._fail(str(exc)) from exc

    def read(self, timeout_s: float) -> ThermalFrame | None:
        """The next frame, reading packets for up to ``timeout_s`` seconds (0 or less: one transfer).

        Returns None on timeout; raises SensorError when closed or when SPI fails.
        """
        deadline = self._clock.monotonic_ns() + round(max(timeout_s, 0.0) * 1e9)
        size = vospi.PACKET_BYTES
        while True:
            spi = self._spi
            if spi is None:
                raise SensorError(f"{self.name}: read while closed")
            if len(self._rx) < size:
                try:
                    self._rx = bytes(spi.readbytes(size * self._packets_per_read))
                except OSError as exc:
                    raise self._fail(f"SPI read: {exc.strerror or exc}") from exc
            while len(self._rx) >= size:
                packet, self._rx = self._rx[:size], self._rx[size:]
                frame = self._assembler.feed(packet)
                if frame is not None:
                    return self._to_thermal(frame)
                if self._assembler.needs_resync:
                    log.warning("%s: VoSPI sync lost; idling chip select for 185 ms", self.name)
                    self._rx = b""  # what was clocked in before the idle is stale
                    self._clock.sleep(vospi.RESYNC_IDLE_S)
                    self._assembler.resynced()
            if self._clock.monotonic_ns() >= deadline:
                return None

    def _to_thermal(self, frame: vospi.Frame) -> ThermalFrame:
        now = self._clock.monotonic_ns()
        row = frame.row_a
        if row is not None:
            self._fpa_ck = row.fpa_temp_ck
        elif self._cci is not None and self._index % FPA_POLL_FRAMES == 0:  # before this frame's index
            try:
                self._fpa_ck = self._cci.fpa_temp_ck()
            except CciError as exc:
                log.warning("%s: FPA temperature: %s", self.name, exc)
        data = frame.pixels
        if self._resolution_ck != 1:
            data = np.minimum(data.astype(np.uint32) * self._resolution_ck, 0xFFFF).astype(np.uint16)
        index = self._index + frame.dropped_before
        self._index = index + 1
        thermal = ThermalFrame(
            index=index,
            mono_ns=now,
            sensor_ns=row.uptime_ms * 1_000_000 if row is not None else now,
            width=vospi.WIDTH,
            height=vospi.HEIGHT,
            data=data,
            fpa_temp_ck=self._fpa_ck,
            dropped_before=frame.dropped_before,
        )
        return thermal

    def get_status(self) -> dict[str, object]:
        c = self._assembler.counters
        return {
            "name": self.name,
            "driver": "lepton-spi",
            "open": self._spi is not None,
            "telemetry": self._telemetry.value,
            "resolution_ck": self._resolution_ck,
            "frames": c.frames,
            "dropped": c.frames_dropped,
            "discards": c.discards,
            "crc_errors": c.crc_errors,
            "sequence_errors": c.sequence_errors,
            "invalid_segments": c.invalid_segments,
            "resyncs": c.resyncs,
            "fpa_temp_ck": self._fpa_ck,
            "last_error": self._last_error,
        }

    def _fail(self, message: str) -> SensorError:
        self._last_error = message
        return SensorError(f"{self.name}: {message}")
