"""gpsd report decoding (on lines recorded from gpsd 3.22) and the driver's socket handling on loopback."""

from __future__ import annotations

import math
import socket
import threading
from collections.abc import Iterator

import pytest

from drivers.gpsd_gnss import GpsdGnss
from drivers.gpsd_reports import (
    SIGMA_PER_95,
    EpochAssembler,
    ReportError,
    fix_from_tpv,
    parse_line,
    parse_time_ns,
    satellites_used,
    time_quality,
)
from hal.clock import TimeSource
from hal.common import SensorError
from hal.gnss import FixMode
from tests.fakes import FakeClock

S = 1_000_000_000
T0 = 1_715_679_006 * S  # 2024-05-14T09:30:06Z

# Recorded from gpsd 3.22 fed the shipped track through a pty (trimmed to the keys that matter).
RECORDED = [
    '{"class":"VERSION","release":"3.22","rev":"3.22","proto_major":3,"proto_minor":14}',
    '{"class":"DEVICES","devices":[{"class":"DEVICE","path":"/dev/pts/0","activated":"2026-11-22T22:16:40.447Z"}]}',
    '{"class":"WATCH","enable":true,"json":true,"nmea":false,"raw":0,"scaled":false}',
    '{"class":"TPV","device":"/dev/pts/0","mode":1}',
    '{"class":"GST","device":"/dev/pts/0"}',
    '{"class":"TPV","device":"/dev/pts/0","mode":2,"time":"2024-05-14T09:30:06.000Z","ept":0.005,'
    '"lat":51.920418500,"lon":4.477222833,"track":86.8200,"speed":1.385,"eph":1899.810}',
    '{"class":"GST","device":"/dev/pts/0","time":"2024-05-14T09:30:06.000Z","rms":12.200,"major":1.400,'
    '"minor":1.100,"orient":70.000,"lat":1.400,"lon":1.100,"alt":2.400}',
    '{"class":"TPV","device":"/dev/pts/0","mode":3,"time":"2024-05-14T09:30:08.000Z","ept":0.005,'
    '"lat":51.920426333,"lon":4.477254833,"altHAE":49.9000,"altMSL":3.8000,"alt":3.8000,"epv":31.740,'
    '"track":86.8200,"speed":1.332,"eph":20.140}',
    '{"class":"GST","device":"/dev/pts/0","time":"2024-05-14T09:30:08.000Z","lat":1.600,"lon":1.400,"alt":2.600}',
]


def test_time_parses_to_exact_nanoseconds() -> None:
    assert parse_time_ns("2024-05-14T09:30:06.000Z") == T0
    assert parse_time_ns("2024-05-14T09:30:06Z") == T0
    assert parse_time_ns("2024-05-14T09:30:06.123456789Z") == T0 + 123_456_789
    assert parse_time_ns("2016-12-31T23:59:60.500Z") == 1_483_228_800 * S + 500_000_000  # leap second
    for bad in (None, 1715679006.0, "", "2024-05-14 09:30:06Z", "2024-02-30T00:00:00Z", "garbage"):
        assert parse_time_ns(bad) is None


@pytest.mark.parametrize("line", ["", "not json", "[1, 2]", '{"mode": 3}', '{"class": 7}', b"\xff\xfe"])
def test_lines_that_are_not_reports_raise_report_error(line: str | bytes) -> None:
    with pytest.raises(ReportError):
        parse_line(line)


def test_tpv_before_the_first_fix_has_no_position_and_no_trusted_time() -> None:
    """gpsd-py3's 'GPS not active' case: TPVs with mode 0/1 and most keys missing."""
    for tpv in ({"class": "TPV"}, {"class": "TPV", "mode": 0}, {"class": "TPV", "mode": 1}):
        fix = fix_from_tpv(tpv, 5)
        assert (fix.mode, fix.utc_ns, fix.lat_deg, fix.h_acc_m, fix.mono_ns) == (FixMode.NO_FIX, None, None, None, 5)
        assert time_quality(tpv).source is TimeSource.UNSYNCED
    q = time_quality({"class": "TPV", "mode": 1, "time": "2024-05-14T09:30:06.000Z"})
    assert q.source is TimeSource.GNSS and not q.synced


def test_mode_without_coordinates_or_with_nonsense_is_no_fix() -> None:
    assert fix_from_tpv({"mode": 3, "lat": 51.9}, 0).mode is FixMode.NO_FIX
    assert fix_from_tpv({"mode": 2, "lat": "51.9", "lon": 4.4}, 0).mode is FixMode.NO_FIX
    assert fix_from_tpv({"mode": 2, "lat": 91.0, "lon": 4.4}, 0).mode is FixMode.NO_FIX
    assert fix_from_tpv({"mode": 2, "lat": math.nan, "lon": 4.4}, 0).mode is FixMode.NO_FIX


def test_null_island_and_dead_reckoned_manual_or_simulated_status_are_no_fix_but_keep_time() -> None:
    # Issue 11 case 8's sibling: the same rules as the NMEA parser for what gpsd already decoded.
    tpv = {"class": "TPV", "mode": 3, "time": "2024-05-14T09:30:06.000Z", "lat": 51.9, "lon": 4.4}
    assert fix_from_tpv(tpv, 0).mode is FixMode.FIX_3D
    assert fix_from_tpv({**tpv, "lat": 0.0, "lon": 0.0}, 0).mode is FixMode.NO_FIX
    for status in (5, 7, 8):  # gpsd's STATUS_DR, STATUS_TIME (manual/surveyed), STATUS_SIM
        fix = fix_from_tpv({**tpv, "status": status}, 0)
        assert fix.mode is FixMode.NO_FIX and fix.lat_deg is None and fix.utc_ns is not None
        assert time_quality({**tpv, "status": status}).synced  # the time is still the receiver's
    assert fix_from_tpv({**tpv, "status": 2}, 0).mode is FixMode.FIX_3D  # DGPS


def test_negative_or_impossible_tpv_values_are_dropped_not_passed_on() -> None:
    tpv = {"class": "TPV", "mode": 3, "time": "2024-05-14T09:30:06.000Z", "lat": 51.9, "lon": 4.4}
    bad = {**tpv, "speed": -3.0, "track": 400.0, "eph": -5.0, "epv": -1.0, "alt": 1e9, "ept": -0.1}
    fix = fix_from_tpv(bad, 0)
    assert fix.mode is FixMode.FIX_3D and fix.lat_deg == 51.9
    assert (fix.speed_mps, fix.track_deg, fix.h_acc_m, fix.v_acc_m, fix.alt_m) == (None, None, None, None, None)
    assert time_quality(bad).uncertainty_ns is None
    gst = {"class": "GST", "time": tpv["time"], "lat": -1.0, "lon": 2.0, "alt": -3.0}
    assert fix_from_tpv({**tpv, "eph": 10.0}, 0, gst).h_acc_m == pytest.approx(10.0 * SIGMA_PER_95)


def test_tpv_accuracy_falls_back_to_gpsd_estimates_scaled_to_one_sigma() -> None:
    tpv = {"mode": 3, "time": "2024-05-14T09:30:06Z", "lat": 1.0, "lon": 2.0, "altMSL": 10.0, "alt": 99.0,
           "epx": 3.0, "epy": 4.0, "eph": 100.0, "epv": 8.0, "ept": 0.005}  # fmt: skip
    fix = fix_from_tpv(tpv, 0)
    assert fix.h_acc_m == pytest.approx(5.0 * SIGMA_PER_95)  # epx, epy before eph
    assert fix.v_acc_m == pytest.approx(8.0 * SIGMA_PER_95)
    assert fix.alt_m == 10.0, "altMSL wins over the deprecated alt"
    del tpv["epx"]
    assert fix_from_tpv(tpv, 0).h_acc_m == pytest.approx(100.0 * SIGMA_PER_95)
    q = time_quality(tpv)
    assert q == type(q)(TimeSource.GNSS, synced=True, uncertainty_ns=5_000_000)
    two_d = fix_from_tpv({**tpv, "mode": 2}, 0)
    assert two_d.alt_m is None and two_d.v_acc_m is None


def test_gst_of_another_epoch_is_not_used() -> None:
    tpv = {"mode": 2, "time": "2024-05-14T09:30:06Z", "lat": 1.0, "lon": 2.0, "eph": 19.6}
    gst = {"time": "2024-05-14T09:30:05Z", "lat": 1.0, "lon": 1.0}
    assert fix_from_tpv(tpv, 0, gst).h_acc_m == pytest.approx(10.0)


def test_satellites_from_sky() -> None:
    assert satellites_used({"uSat": 7, "satellites": []}) == 7
    assert satellites_used({"satellites": [{"used": True}, {"used": False}, {"used": True}, "junk"]}) == 2
    assert satellites_used({}) is None


def test_recorded_stream_gives_one_fix_per_epoch_joined_with_its_gst() -> None:
    asm = EpochAssembler(hold_ns=300_000_000)
    out = []
    for i, line in enumerate(RECORDED):
        out += asm.feed(parse_line(line), i)
    assert asm.devices == ["/dev/pts/0"]
    assert [r.fix.mode for r in out] == [FixMode.NO_FIX, FixMode.FIX_2D, FixMode.FIX_3D]
    first, second = out[1].fix, out[2].fix
    assert first.utc_ns == T0 and first.mono_ns == 5, "stamped when the TPV came, not the GST"
    assert first.h_acc_m == pytest.approx(math.hypot(1.4, 1.1)), "GST's 1-sigma, not eph 1899"
    assert first.v_acc_m is None and first.alt_m is None
    assert second.alt_m == 3.8 and second.v_acc_m == 2.6 and second.h_acc_m == pytest.approx(math.hypot(1.6, 1.4))
    assert out[2].time_quality.synced and out[2].time_quality.uncertainty_ns == 5_000_000


def test_held_tpv_is_released_by_the_next_tpv_or_by_flush_when_its_gst_never_comes() -> None:
    asm = EpochAssembler(hold_ns=100)
    asm.feed({"class": "GST"}, 0)
    tpv = {"class": "TPV", "mode": 2, "time": "2024-05-14T09:30:06Z", "lat": 1.0, "lon": 2.0}
    assert asm.feed(tpv, 1000) == []
    assert asm.hold_left_ns(1050) == 50 and not asm.due(1050) and asm.due(1100)
    flushed = asm.flush()
    assert len(flushed) == 1 and flushed[0].fix.h_acc_m is None and asm.hold_left_ns(2000) is None
    asm.feed(tpv, 2000)
    released = asm.feed({**tpv, "time": "2024-05-14T09:30:07Z"}, 3000)
    assert [r.fix.utc_ns for r in released] == [T0]


def test_device_unplugged_and_errors_are_tracked() -> None:
    asm = EpochAssembler()
    asm.feed(parse_line(RECORDED[1]), 0)
    asm.feed({"class": "DEVICE", "path": "/dev/ttyACM0", "activated": "2024-05-14T09:30:06Z"}, 0)
    assert asm.devices == ["/dev/pts/0", "/dev/ttyACM0"]
    asm.feed({"class": "DEVICE", "path": "/dev/pts/0", "activated": 0}, 0)
    asm.feed({"class": "ERROR", "message": "unrecognized request"}, 0)
    assert asm.devices == ["/dev/ttyACM0"] and asm.errors == ["unrecognized request"]


# --- the driver over a loopback socket that plays a recorded gpsd ------------------------------


class FakeGpsd:
    """A loopback TCP server that sends canned lines to the first client, then keeps it open."""

    def __init__(self, lines: list[bytes]) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self._lines = lines
        self.received = b""
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        self.conn: socket.socket | None = None

    def _serve(self) -> None:
        conn, _ = self._server.accept()
        self.conn = conn
        self.received = conn.recv(1024)
        for line in self._lines:
            conn.sendall(line)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self._server.close()
        self._thread.join(2)


@pytest.fixture
def recorded_gpsd() -> Iterator[FakeGpsd]:
    server = FakeGpsd([(line + "\n").encode() for line in RECORDED])
    yield server
    server.close()


def test_driver_reads_the_recorded_stream_and_sends_watch(recorded_gpsd: FakeGpsd) -> None:
    clock = FakeClock()
    with GpsdGnss(name="gnss", clock=clock, port=recorded_gpsd.port) as gnss:
        fixes = [gnss.read(2.0) for _ in range(3)]
        assert gnss.read(0) is None, "a poll with nothing waiting returns None"
        status = gnss.get_status()
    assert recorded_gpsd.received.startswith(b'?WATCH={"enable":true,"json":true}')
    assert [f.mode if f else None for f in fixes] == [FixMode.NO_FIX, FixMode.FIX_2D, FixMode.FIX_3D]
    assert status["gpsd_version"] == "3.22" and status["time_to_first_fix_s"] == 0.0
    assert status["time_synced"] is True and status["time_source"] == "gnss"
    with pytest.raises(SensorError, match="read while closed"):
        gnss.read(0)


def test_something_that_is_not_gpsd_is_refused() -> None:
    server = FakeGpsd([b"SSH-2.0-OpenSSH_9.2\r\n"])
    try:
        gnss = GpsdGnss(name="gnss", clock=FakeClock(), port=server.port)
        gnss.open()
        with pytest.raises(SensorError, match="is not gpsd"):
            gnss.read(2.0)
        gnss.close()
        gnss.close()
    finally:
        server.close()


def test_gpsd_closing_the_connection_is_a_sensor_error() -> None:
    server = FakeGpsd([(RECORDED[0] + "\n").encode()])
    try:
        gnss = GpsdGnss(name="gnss", clock=FakeClock(), port=server.port)
        gnss.open()
        assert gnss.read(0.3) is None
        server.close()
        with pytest.raises(SensorError, match="gpsd closed the connection"):
            gnss.read(2.0)
    finally:
        server.close()


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="port"):
        GpsdGnss(name="gnss", clock=FakeClock(), port=0)
    with pytest.raises(ValueError, match="host"):
        GpsdGnss(name="gnss", clock=FakeClock(), host="")
