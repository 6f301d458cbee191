"""A pure NMEA 0183 parser: checksums, RMC/GGA/GSA/GST sentences to fields, epochs of sentences to fixes.

No I/O: the simulated receiver, a serial receiver and a gpsd/gpsfake test all feed it lines.
Anything that is not a valid sentence raises :class:`NmeaError` and nothing else.
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from hal.gnss import FixMode, GnssFix

_NS_PER_S = 1_000_000_000
_KNOT_MPS = 1852 / 3600
_MAX_LINE = 200  # the standard says 82; receivers exceed it, garbage exceeds it by far
_ADDRESS = re.compile(r"(?:[A-Z]{2}[A-Z]{3}|P[A-Z0-9]{3,})")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
_TIME = re.compile(r"(\d\d)(\d\d)(\d\d)(?:\.(\d{1,9}))?")
_DATE = re.compile(r"(\d\d)(\d\d)(\d\d)")
_EPOCH = datetime.date(1970, 1, 1)


class NmeaError(ValueError):
    """A line that is not a valid NMEA sentence: bad checksum, malformed field, or garbage."""


@dataclass(frozen=True, slots=True)
class Rmc:
    """Recommended minimum data. ``tod_ns``: nanoseconds since midnight UTC."""

    talker: str
    tod_ns: int | None
    date: datetime.date | None
    valid: bool
    lat_deg: float | None
    lon_deg: float | None
    speed_knots: float | None
    track_deg: float | None
    mode: str | None

    @property
    def utc_ns(self) -> int | None:
        if self.tod_ns is None or self.date is None:
            return None
        return (self.date - _EPOCH).days * 86_400 * _NS_PER_S + self.tod_ns


@dataclass(frozen=True, slots=True)
class Gga:
    """Fix data. ``quality`` 0 means no fix; ``alt_m`` is above mean sea level."""

    talker: str
    tod_ns: int | None
    lat_deg: float | None
    lon_deg: float | None
    quality: int
    satellites: int | None
    hdop: float | None
    alt_m: float | None
    geoid_sep_m: float | None


@dataclass(frozen=True, slots=True)
class Gsa:
    """DOP and active satellites. ``fix_mode``: 1 none, 2 2D, 3 3D."""

    talker: str
    selection: str
    fix_mode: int
    prns: tuple[int, ...]
    pdop: float | None
    hdop: float | None
    vdop: float | None


@dataclass(frozen=True, slots=True)
class Gst:
    """Pseudorange error statistics: 1-sigma errors in metres."""

    talker: str
    tod_ns: int | None
    rms: float | None
    major_m: float | None
    minor_m: float | None
    orient_deg: float | None
    lat_sd_m: float | None
    lon_sd_m: float | None
    alt_sd_m: float | None


@dataclass(frozen=True, slots=True)
class Other:
    """A well-formed sentence of a type this parser does not interpret (GSV, VTG, proprietary...)."""

    talker: str
    kind: str
    fields: tuple[str, ...]


Sentence = Rmc | Gga | Gsa | Gst | Other


def checksum(body: str) -> int:
    """XOR of the characters between ``$`` and ``*``."""
    value = 0
    for byte in body.encode("ascii"):
        value ^= byte
    return value


def format_sentence(body: str) -> str:
    """``body`` framed as a sentence with its checksum, without line ending."""
    return f"${body}*{checksum(body):02X}"


def parse(line: str | bytes) -> Sentence:
    """Parse one sentence (surrounding whitespace and CR/LF allowed); raise NmeaError if invalid."""
    if isinstance(line, bytes):
        try:
            line = line.decode("ascii")
        except UnicodeDecodeError:
            raise NmeaError("not ASCII") from None
    text = line.strip(" \t\r\n")
    if len(text) > _MAX_LINE:
        raise NmeaError(f"sentence too long ({len(text)} characters)")
    if not text.startswith("$"):
        raise NmeaError("no leading '$'")
    star = text.rfind("*")
    if star < 0:
        raise NmeaError("no checksum")
    body, given = text[1:star], text[star + 1 :]
    if not body.isascii() or not body.isprintable() or "$" in body or "*" in body:
        raise NmeaError("invalid characters in sentence")
    if not re.fullmatch(r"[0-9A-Fa-f]{2}", given):
        raise NmeaError(f"malformed checksum {given!r}")
    if int(given, 16) != checksum(body):
        raise NmeaError(f"checksum mismatch: sentence says {given.upper()}, computed {checksum(body):02X}")
    address, *fields = body.split(",")
    if not _ADDRESS.fullmatch(address):
        raise NmeaError(f"bad address field {address!r}")
    if address.startswith("P"):
        return Other("P", address[1:], tuple(fields))
    talker, kind = address[:2], address[2:]
    parser = _PARSERS.get(kind)
    if parser is None:
        return Other(talker, kind, tuple(fields))
    return parser(talker, fields)


def _need(kind: str, fields: list[str], count: int) -> None:
    if len(fields) < count:
        raise NmeaError(f"{kind}: expected at least {count} fields, got {len(fields)}")


def _number(kind: str, name: str, text: str) -> float | None:
    if text == "":
        return None
    if not _NUMBER.fullmatch(text):
        raise NmeaError(f"{kind}: {name} {text!r} is not a number")
    value = float(text)
    if not math.isfinite(value):
        raise NmeaError(f"{kind}: {name} {text!r} is out of range")
    return value


def _integer(kind: str, name: str, text: str) -> int | None:
    if text == "":
        return None
    if not text.isdigit() or not text.isascii() or len(text) > 6:
        raise NmeaError(f"{kind}: {name} {text!r} is not a small unsigned integer")
    return int(text)


def _tod(kind: str, text: str) -> int | None:
    if text == "":
        return None
    m = _TIME.fullmatch(text)
    if m is None:
        raise NmeaError(f"{kind}: time {text!r} is not hhmmss.ss")
    hh, mm, ss = int(m[1]), int(m[2]), int(m[3])
    if hh > 23 or mm > 59 or ss > 60:  # 60: a leap second
        raise NmeaError(f"{kind}: time {text!r} out of range")
    frac_ns = int((m[4] or "").ljust(9, "0"))
    return ((hh * 60 + mm) * 60 + ss) * _NS_PER_S + frac_ns


def _date(kind: str, text: str) -> datetime.date | None:
    if text == "":
        return None
    m = _DATE.fullmatch(text)
    if m is None:
        raise NmeaError(f"{kind}: date {text!r} is not ddmmyy")
    yy = int(m[3])
    try:
        return datetime.date(2000 + yy if yy < 80 else 1900 + yy, int(m[2]), int(m[1]))
    except ValueError:
        raise NmeaError(f"{kind}: date {text!r} does not exist") from None


def _angle(kind: str, value: str, hemisphere: str, positive: str, negative: str, limit: float) -> float | None:
    """``ddmm.mmmm`` plus a hemisphere letter, as signed decimal degrees."""
    if value == "":
        return None
    number = _number(kind, "coordinate", value)
    if number is None or number < 0 or hemisphere not in (positive, negative):
        raise NmeaError(f"{kind}: coordinate {value!r},{hemisphere!r} is malformed")
    degrees, minutes = divmod(number, 100.0)
    result = degrees + minutes / 60.0
    if minutes >= 60.0 or result > limit:
        raise NmeaError(f"{kind}: coordinate {value!r},{hemisphere!r} out of range")
    return -result if hemisphere == negative else result


def _parse_rmc(talker: str, f: list[str]) -> Rmc:
    _need("RMC", f, 11)
    if f[1] not in ("A", "V"):
        raise NmeaError(f"RMC: status {f[1]!r} is neither A nor V")
    mode = f[11] if len(f) > 11 and f[11] != "" else None
    return Rmc(
        talker=talker,
        tod_ns=_tod("RMC", f[0]),
        date=_date("RMC", f[8]),
        valid=f[1] == "A" and mode != "N",
        lat_deg=_angle("RMC", f[2], f[3], "N", "S", 90.0),
        lon_deg=_angle("RMC", f[4], f[5], "E", "W", 180.0),
        speed_knots=_number("RMC", "speed", f[6]),
        track_deg=_number("RMC", "track", f[7]),
        mode=mode,
    )


def _parse_gga(talker: str, f: list[str]) -> Gga:
    _need("GGA", f, 9)
    quality = _integer("GGA", "quality", f[5])
    return Gga(
        talker=talker,
        tod_ns=_tod("GGA", f[0]),
        lat_deg=_angle("GGA", f[1], f[2], "N", "S", 90.0),
        lon_deg=_angle("GGA", f[3], f[4], "E", "W", 180.0),
        quality=quality or 0,
        satellites=_integer("GGA", "satellites", f[6]),
        hdop=_number("GGA", "HDOP", f[7]),
        alt_m=_number("GGA", "altitude", f[8]),
        geoid_sep_m=_number("GGA", "geoid separation", f[10]) if len(f) > 10 else None,
    )


def _parse_gsa(talker: str, f: list[str]) -> Gsa:
    _need("GSA", f, 17)
    mode = _integer("GSA", "fix mode", f[1])
    if mode not in (1, 2, 3):
        raise NmeaError(f"GSA: fix mode {f[1]!r} is not 1, 2 or 3")
    prns = tuple(p for p in (_integer("GSA", "PRN", x) for x in f[2:14]) if p is not None)
    return Gsa(
        talker=talker,
        selection=f[0],
        fix_mode=mode,
        prns=prns,
        pdop=_number("GSA", "PDOP", f[14]),
        hdop=_number("GSA", "HDOP", f[15]),
        vdop=_number("GSA", "VDOP", f[16]),
    )


def _parse_gst(talker: str, f: list[str]) -> Gst:
    _need("GST", f, 8)
    values = [_number("GST", name, text) for name, text in zip(_GST_NAMES, f[1:8], strict=True)]
    return Gst(talker, _tod("GST", f[0]), *values)


_GST_NAMES = ("rms", "major", "minor", "orientation", "lat sigma", "lon sigma", "alt sigma")
_PARSERS: dict[str, Callable[[str, list[str]], Sentence]] = {
    "RMC": _parse_rmc,
    "GGA": _parse_gga,
    "GSA": _parse_gsa,
    "GST": _parse_gst,
}


def _tod_of(sentence: Sentence) -> int | None:
    return sentence.tod_ns if isinstance(sentence, Rmc | Gga | Gst) else None


class EpochAssembler:
    """Groups a receiver's sentences into epochs (one navigation solution each).

    A new epoch starts when a timed sentence (RMC, GGA, GST) repeats a type already seen in
    the current epoch or carries a different time; GSA and other sentences join the current one.
    """

    def __init__(self) -> None:
        self._current: list[Sentence] = []
        self._tod_ns: int | None = None

    def feed(self, sentence: Sentence) -> list[Sentence] | None:
        """Add ``sentence``; return the epoch it completed, if any."""
        finished = None
        tod = _tod_of(sentence)
        if isinstance(sentence, Rmc | Gga | Gst):
            repeated = any(type(s) is type(sentence) for s in self._current)
            if repeated or (tod is not None and self._tod_ns is not None and tod != self._tod_ns):
                finished, self._current, self._tod_ns = self._current, [], None
        self._current.append(sentence)
        if tod is not None:
            self._tod_ns = tod
        return finished or None

    def flush(self) -> list[Sentence] | None:
        """The epoch in progress, ending it."""
        finished, self._current, self._tod_ns = self._current, [], None
        return finished or None


def split_epochs(sentences: Iterable[Sentence]) -> list[list[Sentence]]:
    assembler = EpochAssembler()
    epochs = [e for e in (assembler.feed(s) for s in sentences) if e is not None]
    last = assembler.flush()
    return epochs + [last] if last is not None else epochs


def fix_from_epoch(sentences: Iterable[Sentence], mono_ns: int) -> GnssFix:
    """Combine one epoch's sentences into a fix; positions only when the receiver has a fix."""
    rmc = gga = gsa = gst = None
    for s in sentences:
        if isinstance(s, Rmc):
            rmc = s
        elif isinstance(s, Gga):
            gga = s
        elif isinstance(s, Gsa):
            gsa = gsa or s  # multi-constellation receivers send one per system; the first is enough
        elif isinstance(s, Gst):
            gst = s
    has_fix = (rmc is not None or gga is not None) and (rmc is None or rmc.valid) and (gga is None or gga.quality > 0)
    utc_ns = rmc.utc_ns if rmc is not None else None
    if not has_fix:
        return GnssFix(
            mono_ns=mono_ns, utc_ns=utc_ns, mode=FixMode.NO_FIX, satellites=gga.satellites if gga is not None else None
        )
    if gsa is not None and gsa.fix_mode in (2, 3):
        mode = FixMode(gsa.fix_mode)
    else:
        mode = FixMode.FIX_3D if gga is not None and gga.alt_m is not None else FixMode.FIX_2D
    pos = rmc if rmc is not None and rmc.lat_deg is not None else gga
    h_acc = v_acc = None
    if gst is not None:
        if gst.lat_sd_m is not None and gst.lon_sd_m is not None:
            h_acc = math.hypot(gst.lat_sd_m, gst.lon_sd_m)
        v_acc = gst.alt_sd_m
    return GnssFix(
        mono_ns=mono_ns,
        utc_ns=utc_ns,
        mode=mode,
        lat_deg=pos.lat_deg if pos is not None else None,
        lon_deg=pos.lon_deg if pos is not None else None,
        alt_m=gga.alt_m if gga is not None and mode is FixMode.FIX_3D else None,
        h_acc_m=h_acc,
        v_acc_m=v_acc if mode is FixMode.FIX_3D else None,
        speed_mps=rmc.speed_knots * _KNOT_MPS if rmc is not None and rmc.speed_knots is not None else None,
        track_deg=rmc.track_deg if rmc is not None else None,
        satellites=gga.satellites if gga is not None else (len(gsa.prns) if gsa is not None else None),
    )
