"""Issue 11, case 8: the NMEA parser refuses malformed fields, reads placeholders as no fix, never forges a fix.

Real sentences quoted below come from gpsd's regression logs (test/daemon/<file>.log in the gpsd
repository), cited by file name; the rest are built with valid checksums so that only the field
under test is wrong.
"""

from __future__ import annotations

import contextlib
import datetime
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers import nmea
from drivers.sim_gnss import DEFAULT_TRACK, SimGnss
from hal.gnss import FixMode, GnssFix
from tests.fakes import FakeClock

S = 1_000_000_000
GGA_BODY = "GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"
RMC_BODY = "GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W"
# The reproduction: decimal degrees where ddmm.mmmm belongs.
DECIMAL_DEGREES_GGA = nmea.format_sentence("GPGGA,161405.680,37.352387,N,121.953086,W,1,08,0.9,10.0,M,-30.0,M,,")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _with(body: str, index: int, value: str) -> str:
    """``body`` (or a framed sentence) with field ``index`` (0 = the address) replaced, framed with a valid checksum."""
    if body.startswith("$"):
        body = body[1 : body.rindex("*")]
    fields = body.split(",")
    fields[index] = value
    return nmea.format_sentence(",".join(fields))


def _first_report(clock: FakeClock, track: Path) -> tuple[SimGnss, GnssFix | None]:
    """The sim receiver on ``track`` (closed again) and its first report."""
    gnss = SimGnss(name="g", clock=clock, path=str(track), loop=False)
    gnss.open()
    try:
        return gnss, gnss.read(1.5)
    finally:
        gnss.close()


def _fix(*lines: str) -> GnssFix:
    return nmea.fix_from_epoch([nmea.parse(line) for line in lines], mono_ns=1)


def test_decimal_degrees_are_refused_not_read_as_a_fix_near_null_island() -> None:
    with pytest.raises(nmea.NmeaError, match="latitude '37.352387'.* is not ddmm.mmmm") as caught:
        nmea.parse(DECIMAL_DEGREES_GGA)
    assert caught.value.problem is nmea.Problem.COORDINATE
    lon_only = _with(GGA_BODY, 4, "121.953086")
    with pytest.raises(nmea.NmeaError, match="longitude '121.953086'.* is not dddmm.mmmm"):
        nmea.parse(lon_only)


def test_the_sim_receiver_reports_no_fix_for_decimal_degrees_and_counts_the_refusal(
    tmp_path: Path, clock: FakeClock
) -> None:
    track = tmp_path / "bad.nmea"
    rmc_v = nmea.format_sentence("GPRMC,161405.680,V,,,,,,,140524,,,N")
    track.write_text(f"{rmc_v}\n{DECIMAL_DEGREES_GGA}\n")
    gnss, fix = _first_report(clock, track)
    assert fix is not None and fix.mode is FixMode.NO_FIX and fix.lat_deg is None
    status = gnss.get_status()
    assert status["refused"] == {"coordinate": 1} and status["bad_lines"] == 1


@pytest.mark.parametrize(
    ("line", "source"),
    [
        ("$GPGGA,235946.005,8960.000000,N,00000.000000,E,0,0,,137.000,M,13.000,M,,*49", "mtk-3301.log"),
        ("$GPRMC,235946.005,V,8960.000000,N,00000.000000,E,0.000,0.00,050180,,,N*47", "mtk-3301.log"),
        ("$GPRMC,071732.929,V,8960.0000,N,00000.0000,E,0.00,0.00,111111,,,N*73", "tr737A+.log"),
        ("$GPRMC,000416.984,V,36000.0000,N,72000.0000,E,0.000000,,260120,,*3B", "tn200.log"),
        ("$GPGGA,000416.984,0000.0000,N,00000.0000,E,0,00,50.0,0.0,M,0.0,M,0.0,0000*70", "tn200.log"),
    ],
)
def test_placeholder_coordinates_from_gpsd_logs_parse_with_no_position_and_their_time(line: str, source: str) -> None:
    sentence = nmea.parse(line)
    assert isinstance(sentence, nmea.Rmc | nmea.Gga), source
    assert sentence.placeholder and sentence.lat_deg is None and sentence.lon_deg is None
    assert sentence.tod_ns is not None
    fix = nmea.fix_from_epoch([sentence], mono_ns=1)
    assert fix.mode is FixMode.NO_FIX and fix.lat_deg is None
    if isinstance(sentence, nmea.Rmc):
        assert fix.utc_ns == sentence.utc_ns is not None


def test_placeholder_time_is_kept_through_the_sim_receiver(tmp_path: Path, clock: FakeClock) -> None:
    track = tmp_path / "mtk.nmea"  # mtk-3301.log, lines 24-25
    track.write_text(
        "$GPGGA,235946.005,8960.000000,N,00000.000000,E,0,0,,137.000,M,13.000,M,,*49\n"
        "$GPRMC,235946.005,V,8960.000000,N,00000.000000,E,0.000,0.00,050180,,,N*47\n"
    )
    gnss, fix = _first_report(clock, track)
    expected = datetime.datetime(1980, 1, 5, 23, 59, 46, 5000, tzinfo=datetime.UTC)
    assert fix is not None and fix.mode is FixMode.NO_FIX
    assert fix.utc_ns == int(expected.timestamp()) * S + 5_000_000
    assert gnss.get_status()["placeholders"] == 2 and gnss.get_status()["refused"] == {}


def test_a_placeholder_in_a_sentence_that_claims_a_fix_is_still_no_fix() -> None:
    rmc = _with(RMC_BODY, 3, "8960.000000")
    assert _fix(rmc).mode is FixMode.NO_FIX
    assert _fix(_with(_with(GGA_BODY, 2, "0000.0000"), 4, "00000.0000")).mode is FixMode.NO_FIX  # 0/0


def test_rmc_status_and_navigational_status() -> None:
    # ublox-zed-f9p-nmea.log, lines 13 and 15: NMEA 4.10, status A, FAA mode A, nav status V (u-blox
    # sends V, "equipment does not provide navigational status", with every valid fix).
    ublox = ["$GNRMC,003956.00,A,4552.65403,S,17030.00668,E,0.025,,120419,,,A,V*07"]
    ublox.append("$GNGGA,003956.00,4552.65403,S,17030.00668,E,1,12,0.64,14.2,M,1.8,M,,*56")
    fix = _fix(*ublox)
    assert fix.mode is FixMode.FIX_3D and fix.lat_deg == pytest.approx(-(45 + 52.65403 / 60))
    unsafe = _with(RMC_BODY + ",A,U", 0, "GNRMC")
    assert _fix(unsafe).mode is FixMode.NO_FIX
    assert _fix(_with(RMC_BODY + ",A,S", 0, "GNRMC")).mode is FixMode.FIX_2D
    empty_status = nmea.parse(_with(RMC_BODY, 2, ""))
    assert isinstance(empty_status, nmea.Rmc) and not empty_status.valid and empty_status.utc_ns is not None
    assert _fix(_with(RMC_BODY, 2, "")).mode is FixMode.NO_FIX


@pytest.mark.parametrize(
    ("line", "source"),
    [
        ("$GPGGA,125106,3854.5087,N,07726.4523,W,8,10,2.0,268.8,M,-33.9,M,,*7F", "GPSmap-76S.log: simulator"),
        ("$GPGGA,165010.000,4143.6057,N,08338.0788,W,6,00,50.0,203.8,M,-33.7,M,,0000*5D", "garmin-10x.log: DR"),
    ],
)
def test_simulated_and_dead_reckoning_positions_are_not_satellite_fixes(line: str, source: str) -> None:
    assert _fix(line).mode is FixMode.NO_FIX, source
    for mode in "EMSN":
        assert _fix(_with(RMC_BODY + ",A", 12, mode)).mode is FixMode.NO_FIX, mode


def test_a_fix_needs_a_position_three_satellites_and_no_gsa_saying_no_fix() -> None:
    no_position = _with(_with(_with(_with(GGA_BODY, 2, ""), 3, ""), 4, ""), 5, "")
    assert _fix(no_position).mode is FixMode.NO_FIX
    assert _fix(_with(GGA_BODY, 7, "02")).mode is FixMode.NO_FIX
    assert _fix(_with(GGA_BODY, 7, "")).mode is FixMode.FIX_3D  # not counted: not held against it
    gsa_none = nmea.format_sentence("GPGSA,A,1,,,,,,,,,,,,,99.99,99.99,99.99")
    gsa_3d = nmea.format_sentence("GLGSA,A,3,65,66,67,,,,,,,,,,1.5,0.9,1.2")
    assert _fix(nmea.format_sentence(GGA_BODY), gsa_none).mode is FixMode.NO_FIX
    assert _fix(nmea.format_sentence(GGA_BODY), gsa_none, gsa_3d).mode is FixMode.FIX_3D


@pytest.mark.parametrize(
    ("body", "index", "value", "problem", "message"),
    [
        # coordinates
        (GGA_BODY, 2, "-4807.038", nmea.Problem.COORDINATE, "malformed"),
        (GGA_BODY, 2, "+4807.038", nmea.Problem.COORDINATE, "malformed"),
        (GGA_BODY, 2, "4807", nmea.Problem.COORDINATE, "malformed"),  # no decimal point, as gpsd
        (GGA_BODY, 2, "4807.", nmea.Problem.COORDINATE, "malformed"),
        (GGA_BODY, 2, "4.807038e3", nmea.Problem.COORDINATE, "malformed"),
        (GGA_BODY, 2, "nan", nmea.Problem.COORDINATE, "malformed"),
        (GGA_BODY, 2, " 4807.038", nmea.Problem.COORDINATE, "malformed"),
        (GGA_BODY, 2, "48_07.038", nmea.Problem.COORDINATE, "malformed"),
        (GGA_BODY, 2, "807.038", nmea.Problem.COORDINATE, "not ddmm"),
        (GGA_BODY, 4, "1131.000", nmea.Problem.COORDINATE, "not dddmm"),
        (GGA_BODY, 2, "4859.99999999999", nmea.Problem.COORDINATE, "malformed"),  # 11 decimals
        (GGA_BODY, 2, "4860.5", nmea.Problem.COORDINATE, "out of range"),
        (GGA_BODY, 4, "18000.1", nmea.Problem.COORDINATE, "out of range"),
        (GGA_BODY, 3, "E", nmea.Problem.COORDINATE, "malformed"),
        (GGA_BODY, 3, "", nmea.Problem.COORDINATE, "malformed"),
        (GGA_BODY, 4, "", nmea.Problem.COORDINATE, "malformed"),  # a latitude without a longitude
        # numbers: what float() would take
        (RMC_BODY, 7, "nan", nmea.Problem.NUMBER, "speed 'nan' is not a number"),
        (RMC_BODY, 7, "inf", nmea.Problem.NUMBER, "not a number"),
        (RMC_BODY, 7, "1e3", nmea.Problem.NUMBER, "not a number"),
        (RMC_BODY, 7, "+1.0", nmea.Problem.NUMBER, "not a number"),
        (RMC_BODY, 7, " 1.0", nmea.Problem.NUMBER, "not a number"),
        (RMC_BODY, 7, "1_0", nmea.Problem.NUMBER, "not a number"),
        (RMC_BODY, 7, "\u0661", nmea.Problem.FRAMING, "not ASCII"),  # Arabic-Indic one: float() takes it
        (RMC_BODY, 7, "9" * 40, nmea.Problem.NUMBER, "not a number"),
        (RMC_BODY, 7, "-1.0", nmea.Problem.NUMBER, "not a number"),  # negative speed
        (RMC_BODY, 7, "1500.0", nmea.Problem.RANGE, "outside"),
        (RMC_BODY, 8, "360.5", nmea.Problem.RANGE, "track"),
        (GGA_BODY, 8, "-0.9", nmea.Problem.NUMBER, "HDOP"),
        (GGA_BODY, 9, "1e5", nmea.Problem.NUMBER, "altitude"),
        (GGA_BODY, 9, "200000.0", nmea.Problem.RANGE, "altitude"),
        (GGA_BODY, 11, "-500.0", nmea.Problem.RANGE, "geoid"),
        (GGA_BODY, 7, "300", nmea.Problem.RANGE, "satellites"),
        (GGA_BODY, 7, "-8", nmea.Problem.NUMBER, "satellites"),
        (GGA_BODY, 14, "2000", nmea.Problem.RANGE, "DGPS station"),
        # status letters and codes
        (GGA_BODY, 6, "9", nmea.Problem.RANGE, "quality"),
        (GGA_BODY, 10, "F", nmea.Problem.STATUS, "altitude unit"),
        (GGA_BODY, 10, "", nmea.Problem.STATUS, "altitude unit missing"),
        (RMC_BODY, 2, "Q", nmea.Problem.STATUS, "status"),
        (RMC_BODY + ",A", 12, "Z", nmea.Problem.STATUS, "FAA mode"),
        (RMC_BODY + ",A,V", 13, "X", nmea.Problem.STATUS, "navigational status"),
        # time and date
        (RMC_BODY, 1, "120060", nmea.Problem.TIME, "does not exist"),  # :60 only at 23:59
        (RMC_BODY, 1, "1235", nmea.Problem.TIME, "hhmmss"),
        (RMC_BODY, 1, "123519.", nmea.Problem.TIME, "hhmmss"),
        (RMC_BODY, 9, "2208-1", nmea.Problem.DATE, "ddmmyy"),  # april6_2019.log
        (RMC_BODY, 9, "300294", nmea.Problem.DATE, "does not exist"),
        # addresses and field counts
        (RMC_BODY, 0, "IIRMC", nmea.Problem.ADDRESS, "talker 'II'"),
        (GGA_BODY, 0, "INGGA", nmea.Problem.ADDRESS, "not a satellite receiver"),
        (GGA_BODY + ",", 0, "GPGGA", nmea.Problem.FIELD_COUNT, "expected 14 fields, got 15"),
        (RMC_BODY + ",A,V,X", 0, "GPRMC", nmea.Problem.FIELD_COUNT, "got 14"),
        ("GPGSA,A,1,,,,", 0, "GPGSA", nmea.Problem.FIELD_COUNT, "expected 17 or 18"),
        ("GPGST,1,1,1,1,1,1,1,1,1", 0, "GPGST", nmea.Problem.FIELD_COUNT, "expected 8"),
        ("GPGSA,A,3,04,,,,,,,,,,,,2.5,1.3,2.1", 1, "X", nmea.Problem.STATUS, "selection"),
        ("GPGSA,A,3,04,,,,,,,,,,,,2.5,1.3,2.1", 2, "0", nmea.Problem.STATUS, "fix mode"),
        ("GPGST,123519,0.1,0.1,0.1,10,-0.3,0.4,0.5", 6, "-0.3", nmea.Problem.NUMBER, "lat sigma"),
    ],
)
def test_each_field_is_strict_with_a_countable_problem(
    body: str, index: int, value: str, problem: nmea.Problem, message: str
) -> None:
    if value.isascii():
        line: str | bytes = _with(body, index, value)
    else:
        fields = body.split(",")
        fields[index] = value
        line = ("$" + ",".join(fields) + "*00").encode()
    with pytest.raises(nmea.NmeaError, match=message) as caught:
        nmea.parse(line)
    assert caught.value.problem is problem


def test_values_receivers_write_for_unknown_and_real_oddities_parse() -> None:
    gsa = nmea.parse(nmea.format_sentence("GPGSA,A,1,,,,,,,,,,,,,99.99,99.99,0.0"))
    assert isinstance(gsa, nmea.Gsa) and (gsa.pdop, gsa.hdop, gsa.vdop) == (None, None, None)
    leap = nmea.parse(_with(RMC_BODY, 1, "235960.5"))
    assert isinstance(leap, nmea.Rmc) and leap.tod_ns == 86_400 * S + S // 2
    # skytraq-dgps.log: GST orientation -1.1; magellan315.log: magnetic variation "01."; motorola-t805.log:
    # the FAA mode where the variation's direction belongs. None of these is refused.
    assert isinstance(nmea.parse("$GPGST,213122.000,15.7,22.8,11.6,-1.1,0.4,0.6,1.3*76"), nmea.Gst)
    assert _fix("$GPRMC,120824.76,A,3908.8199,N,00023.0832,W,00.0,000.0,130305,01.,W*62").mode is FixMode.FIX_2D
    assert _fix("$GPRMC,212614.879,A,4839.9488,N,00214.8863,E,0.56,344.41,181207,0,A*77").mode is FixMode.FIX_2D
    north_pole = nmea.parse(_with(GGA_BODY, 2, "9000.0000"))
    assert isinstance(north_pole, nmea.Gga) and north_pole.lat_deg == 90.0


def test_parse_log_counts_refusals_by_problem_and_the_shipped_track_is_clean() -> None:
    lines = [nmea.format_sentence(GGA_BODY), DECIMAL_DEGREES_GGA, "$GPGGA*00", "# comment", ""]
    parsed = nmea.parse_log(lines + ["$GPRMC,071732.929,V,8960.0000,N,00000.0000,E,0.00,0.00,111111,,,N*73"])
    assert parsed.refused == {"coordinate": 1, "checksum": 1} and parsed.placeholders == 1
    assert len(parsed.sentences) == 2 and "37.352387" in parsed.examples["coordinate"]
    track = nmea.parse_log(DEFAULT_TRACK.read_bytes().splitlines())
    assert track.refused == {} and track.placeholders == 0 and len(track.sentences) == 2400


_FIELD = st.one_of(
    st.sampled_from(
        ["", "0", "1", "3", "8", "A", "V", "N", "S", "E", "W", "M", "U", "D", "nan", "inf", "-inf", "1e3", "-0",
         "+1", "1_0", " 1", "-1.5", "99.99", "360", "400", "4807.038", "01131.000", "37.352387", "121.953086",
         "8960.000000", "36000.0000", "72000.0000", "0000.0000", "00000.0000", "9000.0000", "18000.0000",
         "9000.0001", "18000.00001", "4860.000", "123519", "235960", "230394", "999999.999999999999"]
    ),
    st.from_regex(r"-?[0-9]{1,6}(\.[0-9]{0,10})?", fullmatch=True),
    st.text(alphabet="0123456789.-+eE NSEWAVn", max_size=12),
)


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from(["GPRMC", "GNGGA", "GPGSA", "GPGST"]),
    st.lists(_FIELD, min_size=8, max_size=18),
    st.sampled_from(["GPRMC", "GNGGA"]),
    st.lists(_FIELD, min_size=11, max_size=14),
)
def test_no_field_values_raise_anything_but_nmea_error_or_make_an_impossible_fix(
    address_a: str, fields_a: list[str], address_b: str, fields_b: list[str]
) -> None:
    sentences = []
    for address, fields in ((address_a, fields_a), (address_b, fields_b)):
        with contextlib.suppress(nmea.NmeaError):
            sentences.append(nmea.parse(nmea.format_sentence(",".join([address, *fields]))))
    fix = nmea.fix_from_epoch(sentences, mono_ns=0)
    if fix.mode is FixMode.NO_FIX:
        assert fix.lat_deg is None and fix.lon_deg is None and fix.alt_m is None
        return
    assert fix.lat_deg is not None and fix.lon_deg is not None
    assert -90 <= fix.lat_deg <= 90 and -180 <= fix.lon_deg <= 180
    assert not (fix.lat_deg == 0 and fix.lon_deg == 0)
    for value in (fix.alt_m, fix.h_acc_m, fix.v_acc_m, fix.speed_mps, fix.track_deg):
        assert value is None or math.isfinite(value)
    assert fix.speed_mps is None or fix.speed_mps >= 0
    assert fix.track_deg is None or 0 <= fix.track_deg <= 360
    assert fix.h_acc_m is None or fix.h_acc_m >= 0
