"""A pure NMEA 0183 parser: checksums, RMC/GGA/GSA/GST sentences to fields, epochs of sentences to fixes.

No I/O: the simulated receiver, a serial receiver and a gpsd/gpsfake test all feed it lines.
Anything that is not a valid sentence raises :class:`NmeaError` (with the :class:`Problem`, for
a driver's counters) and nothing else; every field is converted strictly (see ``nmea_fields``).
A sentence whose receiver wrote placeholder coordinates parses, with no position and its time.
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from drivers.nmea_fields import ALT_RANGE_M, NmeaError, Problem, date, integer, letter, number, position, time_of_day_ns
from hal.gnss import FixMode, GnssFix

__all__ = ["NmeaError", "Problem"]  # re-exported: callers catch nmea.NmeaError

_NS_PER_S = 1_000_000_000
_KNOT_MPS = 1852 / 3600
_MAX_LINE = 200  # the standard says 82; receivers exceed it, garbage exceeds it by far
_ADDRESS = re.compile(r"(?:[A-Z]{2}[A-Z]{3}|P[A-Z0-9]{3,})")
_EPOCH = datetime.date(1970, 1, 1)
# Talkers of satellite receivers (NMEA 4.11, plus BD/QZ/PQ that u-blox and Quectel use). A
# position from an integrated navigation system (IN), an instrument bus (II) or anything else
# is not a satellite fix, whatever its sentence says.
GNSS_TALKERS = frozenset({"GP", "GL", "GA", "GB", "GI", "GN", "GQ", "BD", "QZ", "PQ"})
# GGA fix quality: 1 GPS, 2 DGPS, 3 PPS, 4 RTK fixed, 5 RTK float are satellite fixes; 0 none,
# 6 dead reckoning, 7 manual input and 8 simulator are not (Garmin's simulator says 8).
_GGA_FIX_QUALITIES = frozenset({1, 2, 3, 4, 5})
# RMC FAA mode (NMEA 2.3): N not valid, E dead reckoning, M manual, S simulator: no satellite fix.
_FAA_MODES = "ADEFMNPRS"
_FAA_NOT_A_FIX = frozenset("NEMS")
# RMC navigational status (NMEA 4.10): S safe, C caution, U unsafe, V "equipment does not
# provide navigational status" (u-blox, Quectel, Furuno... send V with every valid fix).
_NAV_STATUSES = "SCUV"
_NAV_NOT_A_FIX = frozenset("U")
# Plausible ranges, beyond which a value is refused: GNSS receivers stop reporting above
# 515 m/s (about 1000 knots); altitudes in ALT_RANGE_M; the geoid is within about 110 m of
# the ellipsoid; a DOP of 99.99 (or 0) is how receivers write "unknown".
_MAX_SPEED_KNOTS = 1_000.0
_GEOID_RANGE_M = (-200.0, 200.0)
_DOP_UNKNOWN = 99.0


@dataclass(frozen=True, slots=True)
class Rmc:
    """Recommended minimum data. ``tod_ns``: nanoseconds since midnight UTC.

    ``valid``: status A (or D) and neither the FAA mode nor the navigational status denies it.
    ``placeholder``: the receiver wrote "unknown" coordinates (no position, time kept).
    """

    talker: str
    tod_ns: int | None
    date: datetime.date | None
    valid: bool
    lat_deg: float | None
    lon_deg: float | None
    speed_knots: float | None
    track_deg: float | None
    mode: str | None
    nav_status: str | None = None
    placeholder: bool = False

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
    placeholder: bool = False

    @property
    def has_fix(self) -> bool:
        """Whether the quality is a satellite fix (not none, dead reckoning, manual or simulated)."""
        return self.quality in _GGA_FIX_QUALITIES


@dataclass(frozen=True, slots=True)
class Gsa:
    """DOP and active satellites. ``fix_mode``: 1 none, 2 2D, 3 3D. DOPs are None when unknown."""

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
            raise NmeaError(Problem.FRAMING, "not ASCII") from None
    text = line.strip(" \t\r\n")
    if len(text) > _MAX_LINE:
        raise NmeaError(Problem.FRAMING, f"sentence too long ({len(text)} characters)")
    if not text.startswith("$"):
        raise NmeaError(Problem.FRAMING, "no leading '$'")
    star = text.rfind("*")
    if star < 0:
        raise NmeaError(Problem.CHECKSUM, "no checksum")
    body, given = text[1:star], text[star + 1 :]
    if not body.isascii() or not body.isprintable() or "$" in body or "*" in body:
        raise NmeaError(Problem.FRAMING, "invalid characters in sentence")
    if not re.fullmatch(r"[0-9A-Fa-f]{2}", given):
        raise NmeaError(Problem.CHECKSUM, f"malformed checksum {given!r}")
    if int(given, 16) != checksum(body):
        computed = checksum(body)
        raise NmeaError(Problem.CHECKSUM, f"checksum mismatch: sentence says {given.upper()}, computed {computed:02X}")
    address, *fields = body.split(",")
    if not _ADDRESS.fullmatch(address):
        raise NmeaError(Problem.ADDRESS, f"bad address field {address!r}")
    if address.startswith("P"):
        return Other("P", address[1:], tuple(fields))
    talker, kind = address[:2], address[2:]
    parser = _PARSERS.get(kind)
    if parser is None:
        return Other(talker, kind, tuple(fields))
    if talker not in GNSS_TALKERS:
        raise NmeaError(Problem.ADDRESS, f"{kind}: talker {talker!r} is not a satellite receiver")
    return parser(talker, fields)


def _count(kind: str, fields: list[str], counts: tuple[int, ...]) -> None:
    if len(fields) not in counts:
        expected = " or ".join(", ".join(str(c) for c in counts).rsplit(", ", 1))
        raise NmeaError(Problem.FIELD_COUNT, f"{kind}: expected {expected} fields, got {len(fields)}")


def _dop(kind: str, name: str, text: str) -> float | None:
    value = number(kind, name, text, 0.0, 100.0)
    return None if value is None or value == 0.0 or value >= _DOP_UNKNOWN else value


def _parse_rmc(talker: str, f: list[str]) -> Rmc:
    # 11 fields (NMEA 2.0), 12 with the FAA mode (2.3), 13 with the navigational status (4.10).
    _count("RMC", f, (11, 12, 13))
    # An empty status is no fix (gpsd reads it as V); D (differential) is what some receivers send for A.
    status = letter("RMC", "status", f[1], "AVD")
    mode = letter("RMC", "FAA mode", f[11], _FAA_MODES) if len(f) > 11 else None
    nav = letter("RMC", "navigational status", f[12], _NAV_STATUSES) if len(f) > 12 else None
    # f[9], f[10], the magnetic variation, is not used: receivers fill it inconsistently (the
    # Motorola T805 writes its mode there, Magellans "01."), so it is neither parsed nor refused.
    pos = position("RMC", f[2], f[3], f[4], f[5])
    return Rmc(
        talker=talker,
        tod_ns=time_of_day_ns("RMC", f[0]),
        date=date("RMC", f[8]),
        valid=status in ("A", "D") and mode not in _FAA_NOT_A_FIX and nav not in _NAV_NOT_A_FIX,
        lat_deg=pos.lat_deg,
        lon_deg=pos.lon_deg,
        speed_knots=number("RMC", "speed", f[6], 0.0, _MAX_SPEED_KNOTS),
        track_deg=number("RMC", "track", f[7], 0.0, 360.0),
        mode=mode,
        nav_status=nav,
        placeholder=pos.placeholder,
    )


def _parse_gga(talker: str, f: list[str]) -> Gga:
    _count("GGA", f, (14,))
    quality = integer("GGA", "quality", f[5], 8)
    pos = position("GGA", f[1], f[2], f[3], f[4])
    alt = number("GGA", "altitude", f[8], *ALT_RANGE_M)
    geoid = number("GGA", "geoid separation", f[10], *_GEOID_RANGE_M)
    for value, unit, name in ((alt, f[9], "altitude unit"), (geoid, f[11], "geoid separation unit")):
        if letter("GGA", name, unit, "M") is None and value is not None:
            raise NmeaError(Problem.STATUS, f"GGA: {name} missing")
    number("GGA", "DGPS age", f[12], 0.0, 86_400.0)
    integer("GGA", "DGPS station", f[13], 1023)
    return Gga(
        talker=talker,
        tod_ns=time_of_day_ns("GGA", f[0]),
        lat_deg=pos.lat_deg,
        lon_deg=pos.lon_deg,
        quality=quality or 0,  # empty: no fix, as gpsd reads it
        satellites=integer("GGA", "satellites", f[6], 255),
        hdop=_dop("GGA", "HDOP", f[7]),
        alt_m=alt,
        geoid_sep_m=geoid,
        placeholder=pos.placeholder,
    )


def _parse_gsa(talker: str, f: list[str]) -> Gsa:
    _count("GSA", f, (17, 18))  # 18: NMEA 4.10 adds the system id
    selection = letter("GSA", "selection mode", f[0], "AM")
    mode = integer("GSA", "fix mode", f[1], 3)
    if mode is None or mode < 1:
        raise NmeaError(Problem.STATUS, f"GSA: fix mode {f[1]!r} is not 1, 2 or 3")
    prns = tuple(p for p in (integer("GSA", "PRN", x, 999) for x in f[2:14]) if p is not None)
    if len(f) > 17:
        integer("GSA", "system id", f[17], 15)
    return Gsa(
        talker=talker,
        selection=selection or "",
        fix_mode=mode,
        prns=prns,
        pdop=_dop("GSA", "PDOP", f[14]),
        hdop=_dop("GSA", "HDOP", f[15]),
        vdop=_dop("GSA", "VDOP", f[16]),
    )


def _parse_gst(talker: str, f: list[str]) -> Gst:
    _count("GST", f, (8,))
    values = [number("GST", name, text, low, high) for (name, low, high), text in zip(_GST_FIELDS, f[1:8], strict=True)]
    return Gst(talker, time_of_day_ns("GST", f[0]), *values)


_GST_FIELDS = (  # name, range; sigmas in metres are never negative
    ("rms", 0.0, 1e6),
    ("major", 0.0, 1e6),
    ("minor", 0.0, 1e6),
    ("orientation", -360.0, 360.0),  # an angle: SkyTraq writes -1.1 for 358.9
    ("lat sigma", 0.0, 1e6),
    ("lon sigma", 0.0, 1e6),
    ("alt sigma", 0.0, 1e6),
)
_PARSERS: dict[str, Callable[[str, list[str]], Sentence]] = {
    "RMC": _parse_rmc,
    "GGA": _parse_gga,
    "GSA": _parse_gsa,
    "GST": _parse_gst,
}


@dataclass(frozen=True, slots=True)
class ParsedLog:
    """The sentences of a log, what was refused and why, for a driver's status and log.

    ``refused`` counts refused lines by :class:`Problem` value; ``examples`` keeps the first
    message of each problem; ``placeholders`` counts sentences whose coordinates were a
    receiver's "unknown" (parsed, with no position).
    """

    sentences: list[Sentence]
    refused: dict[str, int]
    examples: dict[str, str]
    placeholders: int


def parse_log(lines: Iterable[bytes | str]) -> ParsedLog:
    """Parse every line of a log; blank lines and ``#`` comments are skipped, not refused."""
    sentences: list[Sentence] = []
    refused: dict[str, int] = {}
    examples: dict[str, str] = {}
    for line in lines:
        raw = line.encode("latin-1", "replace") if isinstance(line, str) else line
        if not raw.strip() or raw.startswith(b"#"):
            continue
        try:
            sentences.append(parse(raw))
        except NmeaError as exc:
            key = exc.problem.value
            refused[key] = refused.get(key, 0) + 1
            examples.setdefault(key, f"{exc} in {raw[:60]!r}")
    placeholders = sum(1 for s in sentences if isinstance(s, Rmc | Gga) and s.placeholder)
    return ParsedLog(sentences, refused, examples, placeholders)


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
    """Combine one epoch's sentences into a fix; positions only when the receiver has a fix.

    A fix needs every RMC and GGA of the epoch to say so (RMC valid, GGA a satellite quality),
    a position from one of them, at least 3 satellites when GGA counts them (as gpsd), and no
    GSA that says "no fix" unless another GSA of the epoch gives 2D or 3D.
    """
    rmc = gga = gst = None
    gsas: list[Gsa] = []
    for s in sentences:
        if isinstance(s, Rmc):
            rmc = s
        elif isinstance(s, Gga):
            gga = s
        elif isinstance(s, Gsa):
            gsas.append(s)  # multi-constellation receivers send one per system
        elif isinstance(s, Gst):
            gst = s
    gsa = next((g for g in gsas if g.fix_mode in (2, 3)), gsas[0] if gsas else None)
    pos = rmc if rmc is not None and rmc.lat_deg is not None else gga
    has_fix = (
        (rmc is not None or gga is not None)
        and (rmc is None or rmc.valid)
        and (gga is None or (gga.has_fix and (gga.satellites is None or gga.satellites >= 3)))
        and (gsa is None or gsa.fix_mode in (2, 3))
        and pos is not None
        and pos.lat_deg is not None
        and pos.lon_deg is not None
    )
    utc_ns = rmc.utc_ns if rmc is not None else None
    if not has_fix or pos is None:
        return GnssFix(
            mono_ns=mono_ns, utc_ns=utc_ns, mode=FixMode.NO_FIX, satellites=gga.satellites if gga is not None else None
        )
    if gsa is not None:
        mode = FixMode(gsa.fix_mode)
    else:
        mode = FixMode.FIX_3D if gga is not None and gga.alt_m is not None else FixMode.FIX_2D
    h_acc = v_acc = None
    if gst is not None:
        if gst.lat_sd_m is not None and gst.lon_sd_m is not None:
            h_acc = math.hypot(gst.lat_sd_m, gst.lon_sd_m)
        v_acc = gst.alt_sd_m
    return GnssFix(
        mono_ns=mono_ns,
        utc_ns=utc_ns,
        mode=mode,
        lat_deg=pos.lat_deg,
        lon_deg=pos.lon_deg,
        alt_m=gga.alt_m if gga is not None and mode is FixMode.FIX_3D else None,
        h_acc_m=h_acc,
        v_acc_m=v_acc if mode is FixMode.FIX_3D else None,
        speed_mps=rmc.speed_knots * _KNOT_MPS if rmc is not None and rmc.speed_knots is not None else None,
        track_deg=rmc.track_deg if rmc is not None else None,
        satellites=gga.satellites if gga is not None else (len(gsa.prns) if gsa is not None else None),
    )
