"""The Lepton CCI against an emulated register file, and the SPI driver against an emulated VoSPI stream."""

from __future__ import annotations

import numpy as np
import pytest

from drivers import lepton_cci as cci
from drivers import lepton_vospi as v
from drivers.i2c_port import I2cError
from drivers.lepton_spi import LeptonSpi
from drivers.registry import load_all
from hal.common import SensorError
from tests.fakes import FakeClock
from tests.unit.test_drv_lepton_vospi import frame_packets, scene, telemetry_words


class EmulatedCci:
    """A Lepton's CCI register file: busy for a few polls after each command, as the real one is."""

    def __init__(
        self, *, busy_polls: int = 2, fail: dict[int, int] | None = None, booted: bool = True,
        ignore_sets: frozenset[int] = frozenset(),
    ) -> None:  # fmt: skip
        self.regs: dict[int, int] = {}
        self.attributes: dict[int, list[int]] = {cci.SYS_FPA_TEMP_K100: [30215], cci.RAD_TLINEAR_RESOLUTION: [1, 0]}
        self.commands: list[int] = []
        self._busy = 0
        self._busy_polls = busy_polls
        self._fail = fail or {}
        self._result = 0
        self._booted = booted
        self._ignore_sets = ignore_sets  # firmware that accepts a SET and keeps its own value
        self.closed = False

    def write(self, address: int, data: bytes) -> None:
        if address != cci.ADDRESS:
            raise I2cError(121, "no ACK")
        reg = int.from_bytes(data[:2], "big")
        words = [int.from_bytes(data[i : i + 2], "big") for i in range(2, len(data), 2)]
        for i, word in enumerate(words):
            self.regs[reg + 2 * i] = word
        if reg == cci.REG_COMMAND:
            self._execute(words[0])

    def _execute(self, command: int) -> None:
        self.commands.append(command)
        base, kind = command & ~0x3, command & 0x3
        length = self.regs.get(cci.REG_DATA_LENGTH, 0)
        self._result = self._fail.get(command, 0)
        if self._result == 0 and kind == cci.SET and base not in self._ignore_sets:
            self.attributes[base] = [self.regs.get(cci.REG_DATA0 + 2 * i, 0) for i in range(length)]
        elif self._result == 0 and kind == cci.GET:
            for i, word in enumerate(self.attributes.get(base, [0] * length)[:length]):
                self.regs[cci.REG_DATA0 + 2 * i] = word
        self._busy = self._busy_polls

    def write_read(self, address: int, data: bytes, length: int) -> bytes:
        reg = int.from_bytes(data[:2], "big")
        if reg == cci.REG_STATUS:
            busy = 1 if self._busy > 0 else 0
            self._busy = max(0, self._busy - 1)
            status = busy | (cci.STATUS_BOOTED if self._booted else 0) | ((self._result & 0xFF) << 8)
            return status.to_bytes(2, "big")
        return b"".join(self.regs.get(reg + i, 0).to_bytes(2, "big") for i in range(0, length, 2))

    def close(self) -> None:
        self.closed = True


class EmulatedVospi:
    """Serves a packet stream over 'SPI', then discard packets; each transfer takes clock time."""

    def __init__(self, clock: FakeClock, packets: list[bytes], hz: int = 18_000_000) -> None:
        self._data = b"".join(packets)
        self._clock = clock
        self._ns_per_byte = 8e9 / hz
        self.transfers = 0

    def readbytes(self, length: int) -> list[int]:
        self.transfers += 1
        self._clock.advance_ns(round(length * self._ns_per_byte))
        chunk, self._data = self._data[:length], self._data[length:]
        while len(chunk) < length:
            chunk += v.DISCARD
        return list(chunk[:length])

    def close(self) -> None:
        pass


# --- CCI ----------------------------------------------------------------------------------------


def test_cci_get_set_run_follow_the_register_protocol() -> None:
    lepton = EmulatedCci()
    port = cci.LeptonCci(lepton, FakeClock())
    assert port.fpa_temp_ck() == 30215
    port.enable_radiometry()
    assert lepton.attributes[cci.RAD_ENABLE] == [1, 0] and lepton.attributes[cci.RAD_TLINEAR_ENABLE] == [1, 0]
    assert lepton.attributes[cci.RAD_TLINEAR_RESOLUTION] == [1, 0]
    port.set_telemetry(True, footer=True)
    assert lepton.attributes[cci.SYS_TELEMETRY_LOCATION] == [1, 0]
    assert lepton.attributes[cci.SYS_TELEMETRY_ENABLE] == [1, 0]
    port.run_ffc()
    assert lepton.commands[0] == 0x0214 and lepton.commands[1] == 0x4E11 and lepton.commands[-1] == 0x0242
    assert port.tlinear_resolution_ck() == 1


def test_cci_error_codes_are_reported_with_their_meaning() -> None:
    port = cci.LeptonCci(EmulatedCci(fail={0x0242: -10}), FakeClock())
    with pytest.raises(cci.CciError, match=r"0x0242 failed with -10 \(command not allowed\)"):
        port.run_ffc()
    assert cci.result_code(0xF604) == -10 and cci.result_code(0x0004) == 0


def test_cci_gives_up_on_a_camera_that_never_boots() -> None:
    clock = FakeClock()
    port = cci.LeptonCci(EmulatedCci(booted=False), clock, timeout_s=0.1)
    with pytest.raises(cci.CciError, match="still busy or booting"):
        port.fpa_temp_ck()
    assert 0.1 <= clock.slept_s < 0.2


def test_words_travel_low_word_first() -> None:
    assert cci.words_of(0x0001_0002) == [0x0002, 0x0001]
    assert cci.value_of([0x0002, 0x0001]) == 0x0001_0002


# --- the SPI driver -----------------------------------------------------------------------------


def make(clock: FakeClock, packets: list[bytes], lepton: EmulatedCci | None = None, **options: object) -> LeptonSpi:
    return LeptonSpi(name="thermal", clock=clock, spi=EmulatedVospi(clock, packets), i2c=lepton or EmulatedCci(),
                     **options)  # type: ignore[arg-type]


def test_driver_sets_up_the_camera_and_reads_radiometric_frames_with_telemetry() -> None:
    clock = FakeClock()
    lepton = EmulatedCci()
    stream = [v.DISCARD] * 3
    for i in range(3):
        tel = telemetry_words(frame_counter=i, uptime_ms=1000 + i * 115)
        stream += frame_packets(scene(i), v.Telemetry.FOOTER, tel)
    with make(clock, stream, lepton) as cam:
        assert lepton.attributes[cci.SYS_TELEMETRY_ENABLE] == [1, 0]
        assert lepton.attributes[cci.RAD_TLINEAR_ENABLE] == [1, 0]
        frames = [cam.read(1.0) for _ in range(3)]
        assert cam.read(0.05) is None, "only discard packets left: a timeout"
        status = cam.get_status()
    assert lepton.closed is False, "a port given to the driver is the giver's to close"
    for i, frame in enumerate(frames):
        assert frame is not None
        assert (frame.index, frame.width, frame.height, frame.dropped_before) == (i, 160, 120, 0)
        np.testing.assert_array_equal(frame.data, scene(i))
        assert frame.sensor_ns == (1000 + i * 115) * 1_000_000, "the Lepton's own uptime, from telemetry"
        assert frame.fpa_temp_ck == 30215
    assert status["frames"] == 3 and status["discards"] >= 3 and status["resolution_ck"] == 1
    with pytest.raises(SensorError, match="read while closed"):
        cam.read(0)


def test_coarse_tlinear_resolution_is_scaled_to_centikelvin() -> None:
    clock = FakeClock()
    lepton = EmulatedCci(ignore_sets=frozenset({cci.RAD_TLINEAR_RESOLUTION}))
    lepton.attributes[cci.RAD_TLINEAR_RESOLUTION] = [0, 0]
    pixels = np.full((120, 160), 3000, dtype=np.uint16)  # 300.0 K at 0.1 K per count
    lepton_cam = make(clock, frame_packets(pixels), lepton, telemetry="off")
    lepton_cam.open()
    assert lepton_cam.get_status()["resolution_ck"] == 10
    frame = lepton_cam.read(1.0)
    assert frame is not None and int(frame.data[0, 0]) == 30000
    assert frame.fpa_temp_ck == 30215, "without telemetry the FPA temperature comes over the CCI"


def test_lost_sync_idles_chip_select_then_recovers_and_counts_the_drop() -> None:
    clock = FakeClock()
    rng = np.random.default_rng(1)
    garbage = [bytes([0]) + rng.integers(0, 256, 163, dtype=np.uint8).tobytes() for _ in range(12)]
    # after the idle the Lepton streams on; the frame interrupted by the resync is lost, the next one comes
    stream = frame_packets(scene(1))[:100] + garbage + frame_packets(scene(2)) + frame_packets(scene(2))
    cam = make(clock, stream, telemetry="off")
    cam.open()
    sleeps_before = len(clock.sleeps)
    frame = cam.read(5.0)
    assert frame is not None
    np.testing.assert_array_equal(frame.data, scene(2))
    assert frame.dropped_before == 1 and frame.index == 1
    assert v.RESYNC_IDLE_S in clock.sleeps[sleeps_before:], "chip select idle >= 185 ms"
    assert cam.get_status()["resyncs"] == 1


def test_a_cci_failure_at_open_is_a_sensor_error() -> None:
    cam = make(FakeClock(), [], EmulatedCci(fail={0x4E11: -1}))
    with pytest.raises(SensorError, match="failed with -1"):
        cam.open()
    assert "failed with -1" in str(cam.get_status()["last_error"])


def test_options_and_registry() -> None:
    with pytest.raises(ValueError, match="telemetry"):
        LeptonSpi(name="t", clock=FakeClock(), telemetry="sideways")
    with pytest.raises(ValueError, match="speed_hz"):
        LeptonSpi(name="t", clock=FakeClock(), speed_hz=40_000_000)
    info = load_all().get("thermal", "lepton-spi")
    availability = info.probe()
    assert availability.usable or availability.reason.startswith(("library missing", "device absent", "permission"))
