"""Strict converters for NMEA 0183 fields, each refusal carrying a :class:`Problem` a driver can count.

Pure functions over the text of one field. Python's ``float()`` is never given raw text: it
accepts ``nan``, ``inf``, ``1e3``, ``+1``, ``" 1_0 "`` and non-ASCII digits, none of which a
receiver writes, so every number is matched against the NMEA shape first and range-checked after.
"""

from __future__ import annotations

import datetime
import enum
import re
from dataclasses import dataclass

_NS_PER_S = 1_000_000_000
_UNSIGNED = re.compile(r"[0-9]{1,12}(?:\.[0-9]{0,12})?")  # "01." is real (Magellan); ".5", "+1", "1e3" are not
_SIGNED = re.compile(r"-?[0-9]{1,12}(?:\.[0-9]{0,12})?")
_COORDINATE = re.compile(r"([0-9]{1,6})\.([0-9]{1,10})")  # the decimal point is required, as gpsd requires it
_TIME = re.compile(r"([0-9]{2})([0-9]{2})([0-9]{2})(?:\.([0-9]{1,9}))?")
_DATE = re.compile(r"([0-9]{2})([0-9]{2})([0-9]{2})")


# Altitudes a receiver can report: GNSS receivers stop above 18 km (export limits); the lowest
# land is 430 m below sea level. Wider than that, for balloons and mines; beyond it, nonsense.
ALT_RANGE_M = (-1_000.0, 100_000.0)


class Problem(enum.Enum):
    """Why a line was refused: one counter per value in a driver's status."""

    FRAMING = "framing"  # not ASCII, too long, no '$', stray '$' or '*', control characters
    CHECKSUM = "checksum"  # missing, malformed or wrong
    ADDRESS = "address"  # malformed address, or a position sentence from a talker that is not a GNSS
    FIELD_COUNT = "field-count"  # fewer or more fields than any version of the standard has
    TIME = "time"  # not hhmmss[.s], or no such time of day
    DATE = "date"  # not ddmmyy, or no such day
    STATUS = "status"  # a status, mode, quality or unit letter outside its set
    COORDINATE = "coordinate"  # not (d)ddmm.m with minutes < 60, or a bad hemisphere
    NUMBER = "number"  # not a plain decimal number (nan, inf, 1e3, +1, spaces...)
    RANGE = "range"  # a number outside what the field can hold (negative speed, track 400°...)


class NmeaError(ValueError):
    """A line that is not a valid NMEA sentence; ``problem`` says which kind of fault."""

    def __init__(self, problem: Problem, message: str) -> None:
        super().__init__(message)
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Axis:
    """Latitude or longitude: how many integer digits (degrees and minutes), the limit, the hemispheres."""

    name: str
    width: int
    limit_deg: float
    positive: str
    negative: str


LATITUDE = Axis("latitude", 4, 90.0, "N", "S")
LONGITUDE = Axis("longitude", 5, 180.0, "E", "W")


def number(kind: str, name: str, text: str, low: float, high: float) -> float | None:
    """A decimal field within ``[low, high]``; None when empty. A minus sign only when ``low < 0``."""
    if text == "":
        return None
    if not (_SIGNED if low < 0 else _UNSIGNED).fullmatch(text):
        raise NmeaError(Problem.NUMBER, f"{kind}: {name} {text!r} is not a number")
    value = float(text)  # the shape above cannot overflow to inf or spell nan
    if not low <= value <= high:
        raise NmeaError(Problem.RANGE, f"{kind}: {name} {text!r} is outside {low:g}..{high:g}")
    return value


def integer(kind: str, name: str, text: str, high: int) -> int | None:
    """An unsigned integer field up to ``high``; None when empty."""
    if text == "":
        return None
    if not text.isascii() or not text.isdigit() or len(text) > 6:
        raise NmeaError(Problem.NUMBER, f"{kind}: {name} {text!r} is not a small unsigned integer")
    value = int(text)
    if value > high:
        raise NmeaError(Problem.RANGE, f"{kind}: {name} {text!r} is more than {high}")
    return value


def letter(kind: str, name: str, text: str, allowed: str) -> str | None:
    """A one-letter field from ``allowed``; None when empty."""
    if text == "":
        return None
    if len(text) != 1 or text not in allowed:
        raise NmeaError(Problem.STATUS, f"{kind}: {name} {text!r} is not one of {', '.join(allowed)}")
    return text


def time_of_day_ns(kind: str, text: str) -> int | None:
    """``hhmmss[.sss]`` as nanoseconds since midnight UTC; None when empty. :60 only at 23:59 (a leap second)."""
    if text == "":
        return None
    m = _TIME.fullmatch(text)
    if m is None:
        raise NmeaError(Problem.TIME, f"{kind}: time {text!r} is not hhmmss.ss")
    hh, mm, ss = int(m[1]), int(m[2]), int(m[3])
    if hh > 23 or mm > 59 or ss > 60 or (ss == 60 and (hh, mm) != (23, 59)):
        raise NmeaError(Problem.TIME, f"{kind}: time {text!r} does not exist")
    frac_ns = int((m[4] or "").ljust(9, "0"))
    return ((hh * 60 + mm) * 60 + ss) * _NS_PER_S + frac_ns


def date(kind: str, text: str) -> datetime.date | None:
    """``ddmmyy`` (years 80-99 are 1980-1999, as GPS began in 1980); None when empty."""
    if text == "":
        return None
    m = _DATE.fullmatch(text)
    if m is None:
        raise NmeaError(Problem.DATE, f"{kind}: date {text!r} is not ddmmyy")
    yy = int(m[3])
    try:
        return datetime.date(2000 + yy if yy < 80 else 1900 + yy, int(m[2]), int(m[1]))
    except ValueError:
        raise NmeaError(Problem.DATE, f"{kind}: date {text!r} does not exist") from None


@dataclass(frozen=True, slots=True)
class Position:
    """A sentence's position: both coordinates, or none; ``placeholder`` when the receiver wrote 'unknown'."""

    lat_deg: float | None = None
    lon_deg: float | None = None
    placeholder: bool = False


NO_POSITION = Position()


def position(kind: str, lat: str, ns: str, lon: str, ew: str) -> Position:
    """Four fields ``ddmm.mmmm,N,dddmm.mmmm,E`` as signed decimal degrees, all four or none of them.

    Receivers without a fix write round impossible values (MTK ``8960.000000``, i.e. 89°60';
    SiRF ``36000.0000`` and ``72000.0000``) or zeros (``0000.0000,N,00000.0000,E``): those
    give no position and ``placeholder``, and the rest of the sentence (its time) stands.
    Anything else that is not ``ddmm.m``/``dddmm.m`` with minutes below 60 is refused: decimal
    degrees (``37.352387``), signs, exponents, a missing decimal point, a wrong hemisphere.
    """
    if (lat, ns, lon, ew) == ("", "", "", ""):
        return NO_POSITION
    lat_deg = _coordinate(kind, lat, ns, LATITUDE)
    lon_deg = _coordinate(kind, lon, ew, LONGITUDE)
    if lat_deg is None or lon_deg is None or (lat_deg == 0.0 and lon_deg == 0.0):
        return Position(placeholder=True)
    return Position(lat_deg, lon_deg)


def _coordinate(kind: str, text: str, hemisphere: str, axis: Axis) -> float | None:
    """One coordinate in signed degrees; None for a receiver's placeholder."""
    m = _COORDINATE.fullmatch(text)
    if m is None or hemisphere not in (axis.positive, axis.negative):
        raise NmeaError(Problem.COORDINATE, f"{kind}: {axis.name} {text!r},{hemisphere!r} is malformed")
    degrees, minutes = divmod(int(m[1]), 100)
    fraction = m[2]
    at_limit = degrees == axis.limit_deg
    if degrees > axis.limit_deg or minutes >= 60 or (at_limit and (minutes > 0 or int(fraction) > 0)):
        if int(fraction) == 0:  # a round impossible value: how receivers write "unknown"
            return None
        raise NmeaError(Problem.COORDINATE, f"{kind}: {axis.name} {text!r} is out of range")
    if len(m[1]) != axis.width:
        pattern = "d" * (axis.width - 4) + "ddmm.mmmm"
        raise NmeaError(Problem.COORDINATE, f"{kind}: {axis.name} {text!r} is not {pattern}")
    value = degrees + (minutes + float("0." + fraction)) / 60.0
    return -value if hemisphere == axis.negative else value
