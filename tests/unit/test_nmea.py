"""The NMEA parser, the epoch assembler, and the shipped track file."""

from __future__ import annotations

import contextlib
import datetime
import importlib.util
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers import nmea
from drivers.sim_gnss import DEFAULT_TRACK
from hal.gnss import FixMode

GGA = "$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47"
RMC = "$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A"
GSA = "$GPGSA,A,3,04,05,,09,12,,,24,,,,,2.5,1.3,2.1*39"
GST = nmea.format_sentence("GPGST,123519.50,0.006,0.023,0.020,273.6,0.3,0.4,0.031")
REPO = Path(__file__).resolve().parents[2]


def test_checksum_matches_the_textbook_examples() -> None:
    assert nmea.format_sentence(GGA[1:-3]) == GGA
    assert nmea.format_sentence(RMC[1:-3]) == RMC


def test_rmc_fields() -> None:
    rmc = nmea.parse(RMC)
    assert isinstance(rmc, nmea.Rmc)
    assert rmc.talker == "GP" and rmc.valid
    assert rmc.lat_deg == pytest.approx(48 + 7.038 / 60)
    assert rmc.lon_deg == pytest.approx(11 + 31.0 / 60)
    assert rmc.speed_knots == 22.4 and rmc.track_deg == 84.4
    assert rmc.date == datetime.date(1994, 3, 23)
    expected = datetime.datetime(1994, 3, 23, 12, 35, 19, tzinfo=datetime.UTC).timestamp()
    assert rmc.utc_ns == int(expected) * 1_000_000_000


def test_gga_gsa_gst_fields() -> None:
    gga = nmea.parse(GGA)
    assert isinstance(gga, nmea.Gga)
    assert (gga.quality, gga.satellites, gga.hdop, gga.alt_m, gga.geoid_sep_m) == (1, 8, 0.9, 545.4, 46.9)
    assert gga.tod_ns == (12 * 3600 + 35 * 60 + 19) * 1_000_000_000
    gsa = nmea.parse(GSA)
    assert isinstance(gsa, nmea.Gsa)
    assert (gsa.fix_mode, gsa.prns, gsa.pdop, gsa.hdop, gsa.vdop) == (3, (4, 5, 9, 12, 24), 2.5, 1.3, 2.1)
    gst = nmea.parse(GST)
    assert isinstance(gst, nmea.Gst)
    assert (gst.lat_sd_m, gst.lon_sd_m, gst.alt_sd_m) == (0.3, 0.4, 0.031)
    assert gst.tod_ns == (12 * 3600 + 35 * 60 + 19) * 1_000_000_000 + 500_000_000


def test_southern_and_western_hemispheres_are_negative() -> None:
    rmc = nmea.parse(nmea.format_sentence("GNRMC,010203.00,A,3352.12800,S,15112.54300,W,0.0,,010125,,,A"))
    assert isinstance(rmc, nmea.Rmc)
    assert rmc.lat_deg == pytest.approx(-(33 + 52.128 / 60))
    assert rmc.lon_deg == pytest.approx(-(151 + 12.543 / 60))
    assert rmc.track_deg is None


def test_bytes_with_crlf_and_lowercase_checksum_parse() -> None:
    assert isinstance(nmea.parse(RMC + "\r\n"), nmea.Rmc)
    assert isinstance(nmea.parse((GGA[:-2] + GGA[-2:].lower() + "\r\n").encode()), nmea.Gga)


def test_unknown_and_proprietary_sentences_are_kept_as_other() -> None:
    gsv = nmea.parse(nmea.format_sentence("GPGSV,3,1,11,03,03,111,00"))
    assert gsv == nmea.Other("GP", "GSV", ("3", "1", "11", "03", "03", "111", "00"))
    pubx = nmea.parse(nmea.format_sentence("PUBX,00,081350.00"))
    assert isinstance(pubx, nmea.Other) and pubx.kind == "UBX"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (RMC[:-2] + "6B", "checksum mismatch"),
        (RMC[:-3], "no checksum"),
        (RMC[1:], "no leading"),
        ("", "no leading"),
        ("$GPRMC,123519,A*ZZ", "malformed checksum"),
        (b"\xff\xfe$GPRMC", "not ASCII"),
        ("$" + "A" * 300 + "*00", "too long"),
        (nmea.format_sentence("GPRMC,123519,A,4860.125,N,01131.000,E,1,1,230394,,"), "out of range"),
        (nmea.format_sentence("GPRMC,123519,A,9000.001,N,01131.000,E,1,1,230394,,"), "out of range"),
        (nmea.format_sentence("GPRMC,123519,A,4807.038,X,01131.000,E,1,1,230394,,"), "malformed"),
        (nmea.format_sentence("GPRMC,123519,A,4807.038,N,01131.000,E,1,1,310299,,"), "does not exist"),
        (nmea.format_sentence("GPRMC,256019,A,,,,,,,230394,,"), "time"),
        (nmea.format_sentence("GPRMC,123519,Q,,,,,,,230394,,"), "status"),
        (nmea.format_sentence("GPRMC,123519,A"), "expected 11, 12 or 13 fields"),
        (nmea.format_sentence("GPGGA,123519,,,,,1,08,nan,,,,,,"), "not a number"),
        (nmea.format_sentence("GPGSA,A,4,,,,,,,,,,,,,1,1,1"), "fix mode"),
        (nmea.format_sentence("gprmc,123519"), "address"),
        ("$GPRMC,1*2*00", "invalid characters"),
    ],
)
def test_bad_sentences_raise_a_clear_nmea_error(line: str | bytes, message: str) -> None:
    with pytest.raises(nmea.NmeaError, match=message):
        nmea.parse(line)


def test_nmea_error_is_a_value_error() -> None:
    assert issubclass(nmea.NmeaError, ValueError)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=120))
def test_any_bytes_parse_or_raise_nmea_error(data: bytes) -> None:
    with contextlib.suppress(nmea.NmeaError):
        nmea.parse(data)


_FIELD_CHARS = st.text(alphabet="0123456789.,-+NSEWAVMDxe ", max_size=90)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(["GPRMC", "GNGGA", "GPGSA", "GLGST", "GPGSV", "PUBX", "XXRMC"]), _FIELD_CHARS)
def test_well_framed_sentences_with_any_fields_parse_or_raise_nmea_error(address: str, fields: str) -> None:
    # A valid checksum gets the fuzz past the framing and into the field parsers.
    with contextlib.suppress(nmea.NmeaError):
        nmea.parse(nmea.format_sentence(f"{address},{fields}"))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=100))
def test_any_text_with_a_valid_checksum_parses_or_raises_nmea_error(body: str) -> None:
    framed = f"${body}*{nmea.checksum(body):02X}" if body.isascii() else f"${body}*00"
    with contextlib.suppress(nmea.NmeaError):
        nmea.parse(framed)


def test_epochs_split_on_repeated_types_and_new_times() -> None:
    lines = [RMC, GGA, GSA, GST.replace("123519.50", "123519"), RMC.replace("123519", "123520")]
    parsed = [nmea.parse(nmea.format_sentence(line[1 : line.rindex("*")])) for line in lines]  # re-checksum
    epochs = nmea.split_epochs(parsed)
    assert [len(e) for e in epochs] == [4, 1]
    empty = [nmea.parse(nmea.format_sentence("GPRMC,,V,,,,,,,,,,N"))] * 3
    assert len(nmea.split_epochs(empty)) == 3


def test_fix_from_epoch_with_and_without_a_fix() -> None:
    gst = nmea.parse(nmea.format_sentence("GPGST,123519,0.006,0.023,0.020,273.6,0.3,0.4,0.031"))
    fix = nmea.fix_from_epoch([nmea.parse(RMC), nmea.parse(GGA), nmea.parse(GSA), gst], mono_ns=42)
    assert fix.mode is FixMode.FIX_3D and fix.mono_ns == 42
    assert fix.alt_m == 545.4 and fix.satellites == 8
    assert fix.speed_mps == pytest.approx(22.4 * 1852 / 3600)
    assert fix.h_acc_m == pytest.approx(0.5) and fix.v_acc_m == 0.031
    none = nmea.fix_from_epoch([nmea.parse(nmea.format_sentence("GPRMC,093003.00,V,,,,,,,140524,,,N"))], 1)
    assert none.mode is FixMode.NO_FIX and none.lat_deg is None
    assert none.utc_ns == int(datetime.datetime(2024, 5, 14, 9, 30, 3, tzinfo=datetime.UTC).timestamp()) * 10**9


def _track_epochs() -> list[list[nmea.Sentence]]:
    lines = [line for line in DEFAULT_TRACK.read_bytes().splitlines() if line and not line.startswith(b"#")]
    return nmea.split_epochs([nmea.parse(line) for line in lines])  # any invalid line fails here


def test_shipped_track_is_ten_minutes_at_1_hz_starting_without_a_fix() -> None:
    epochs = _track_epochs()
    assert len(epochs) == 600
    assert all(len(e) == 4 for e in epochs)
    assert {type(s) for s in epochs[100]} == {nmea.Rmc, nmea.Gga, nmea.Gsa, nmea.Gst}
    fixes = [nmea.fix_from_epoch(e, i) for i, e in enumerate(epochs)]
    assert all(f.mode is FixMode.NO_FIX for f in fixes[:3])
    first_fix = next(i for i, f in enumerate(fixes) if f.mode is not FixMode.NO_FIX)
    assert 3 <= first_fix <= 10
    times = [f.utc_ns for f in fixes if f.utc_ns is not None]
    assert all(b - a == 1_000_000_000 for a, b in zip(times, times[1:], strict=False))
    start, end = fixes[first_fix], fixes[-1]
    assert start.lat_deg is not None and end.lat_deg is not None and start.lon_deg and end.lon_deg
    gap_m = math.hypot(
        (end.lat_deg - start.lat_deg) * 111_320,
        (end.lon_deg - start.lon_deg) * 111_320 * math.cos(math.radians(start.lat_deg)),
    )
    assert gap_m < 30  # a closed loop, so a looping replay does not jump
    speeds = [f.speed_mps for f in fixes if f.speed_mps is not None]
    assert 0.9 < sum(speeds) / len(speeds) < 1.8  # walking


def test_generator_script_reproduces_the_shipped_track() -> None:
    spec = importlib.util.spec_from_file_location("make_track_nmea", REPO / "scripts" / "make_track_nmea.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.generate(2024).encode("ascii") == DEFAULT_TRACK.read_bytes()
