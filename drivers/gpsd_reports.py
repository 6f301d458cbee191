"""Pure decoding of gpsd's JSON reports (TPV, GST, SKY, DEVICE...) into fixes and UTC time quality.

No I/O: the gpsd driver feeds it the lines it reads from the socket, tests feed it recorded lines.
gpsd leaves keys out whenever it does not know them (no ``time`` before the receiver knows the
date, no ``lat`` without a fix, no ``mode`` at all from some old versions), so every key is
optional here and a report of the wrong shape is an error, never a crash.
"""

from __future__ import annotations

import datetime
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from drivers.nmea_fields import ALT_RANGE_M
from hal.clock import TimeQuality, TimeSource
from hal.gnss import FixMode, GnssFix

_NS_PER_S = 1_000_000_000
_TIME = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?Z")
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)

# gpsd derives ep* from DOP times a user range error chosen for about 95 % confidence (see
# gpsd's gpsd_error_model); the HAL wants 1-sigma. GST values are already 1-sigma.
SIGMA_PER_95 = 1 / 1.96


class ReportError(ValueError):
    """A line from gpsd that is not a JSON object with a string ``class``."""


def parse_line(line: str | bytes) -> dict[str, object]:
    """One line of gpsd output as a dict; raise ReportError for anything else."""
    try:
        doc = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise ReportError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("class"), str):
        raise ReportError("not a gpsd report (no 'class')")
    return doc


def parse_time_ns(text: object) -> int | None:
    """gpsd's ISO 8601 UTC time (``2024-05-14T09:30:06.000Z``) as ns since the epoch, exactly.

    None when absent or malformed (gpsd has sent both over the years).
    """
    if not isinstance(text, str):
        return None
    m = _TIME.fullmatch(text)
    if m is None:
        return None
    try:
        y, mo, d, h, mi, sec = (int(m[i]) for i in range(1, 7))
        whole = datetime.datetime(y, mo, d, h, mi, min(sec, 59), tzinfo=datetime.UTC)
        whole += datetime.timedelta(seconds=sec - min(sec, 59))  # a leap second :60 as the next second
    except ValueError:
        return None
    seconds = (whole - _EPOCH) // datetime.timedelta(seconds=1)
    return seconds * _NS_PER_S + int((m[7] or "").ljust(9, "0"))


# TPV "status" values whose position is not a satellite fix (gpsd's STATUS_DR, STATUS_TIME for
# manual or surveyed input, STATUS_SIM), as the NMEA parser treats GGA quality 6-8 and FAA modes
# E/M/S. The time of such a report still counts (a timing receiver in surveyed mode is status 7).
_STATUS_NOT_A_FIX = frozenset({5, 7, 8})
_NONNEGATIVE = (0.0, math.inf)


def _num(
    report: Mapping[str, object], key: str, low: float = -math.inf, high: float = math.inf
) -> float | None:
    """A finite number within ``[low, high]`` under ``key``, else None (absent, null, NaN, a string...)."""
    value = report.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value) if low <= value <= high else None


def fix_mode(tpv: Mapping[str, object]) -> FixMode:
    """TPV ``mode``: 0 (unknown) and absent count as no fix."""
    mode = tpv.get("mode")
    if mode == 3:
        return FixMode.FIX_3D
    if mode == 2:
        return FixMode.FIX_2D
    return FixMode.NO_FIX


def satellites_used(sky: Mapping[str, object]) -> int | None:
    """SKY's ``uSat`` (gpsd >= 3.20), else the count of satellites flagged ``used``."""
    used = sky.get("uSat")
    if isinstance(used, int) and not isinstance(used, bool) and used >= 0:
        return used
    sats = sky.get("satellites")
    if isinstance(sats, list):
        return sum(1 for s in sats if isinstance(s, dict) and s.get("used") is True)
    return None


def fix_from_tpv(
    tpv: Mapping[str, object],
    mono_ns: int,
    gst: Mapping[str, object] | None = None,
    satellites: int | None = None,
) -> GnssFix:
    """A TPV (and the GST of the same epoch, when the receiver sends one) as a HAL fix.

    Accuracies come from GST's 1-sigma lat/lon/alt deviations when given, else from TPV's
    epx/epy/eph/epv scaled from gpsd's 95 % to 1-sigma. Positions only with a fix.
    """
    mode = fix_mode(tpv) if tpv.get("status") not in _STATUS_NOT_A_FIX else FixMode.NO_FIX
    utc_ns = parse_time_ns(tpv.get("time"))
    lat, lon = _num(tpv, "lat", -90.0, 90.0), _num(tpv, "lon", -180.0, 180.0)
    if mode is FixMode.NO_FIX or lat is None or lon is None or (lat == 0.0 and lon == 0.0):
        return GnssFix(mono_ns=mono_ns, utc_ns=utc_ns, mode=FixMode.NO_FIX, satellites=satellites)
    h_acc = v_acc = None
    if gst is not None and parse_time_ns(gst.get("time")) == utc_ns:
        lat_sd, lon_sd = _num(gst, "lat", *_NONNEGATIVE), _num(gst, "lon", *_NONNEGATIVE)
        if lat_sd is not None and lon_sd is not None:
            h_acc = math.hypot(lat_sd, lon_sd)
        v_acc = _num(gst, "alt", *_NONNEGATIVE)
    if h_acc is None:
        epx, epy, eph = (_num(tpv, key, *_NONNEGATIVE) for key in ("epx", "epy", "eph"))
        h95 = math.hypot(epx, epy) if epx is not None and epy is not None else eph
        h_acc = h95 * SIGMA_PER_95 if h95 is not None else None
    if v_acc is None:
        epv = _num(tpv, "epv", *_NONNEGATIVE)
        v_acc = epv * SIGMA_PER_95 if epv is not None else None
    # altMSL since gpsd 3.20; "alt" before (and still, deprecated): both above mean sea level
    alt = _num(tpv, "altMSL", *ALT_RANGE_M)
    alt = alt if alt is not None else _num(tpv, "alt", *ALT_RANGE_M)
    three_d = mode is FixMode.FIX_3D
    return GnssFix(
        mono_ns=mono_ns,
        utc_ns=utc_ns,
        mode=mode,
        lat_deg=lat,
        lon_deg=lon,
        alt_m=alt if three_d else None,
        h_acc_m=h_acc,
        v_acc_m=v_acc if three_d else None,
        speed_mps=_num(tpv, "speed", *_NONNEGATIVE),
        track_deg=_num(tpv, "track", 0.0, 360.0),
        satellites=satellites,
    )


def time_quality(tpv: Mapping[str, object]) -> TimeQuality:
    """How good the receiver's UTC in this TPV is.

    Synced only with a 2D or 3D fix: before it, a receiver's time comes from its own RTC or
    almanac and may be seconds off (or off by the GPS-UTC leap seconds). ``ept`` (gpsd's
    estimated time error, s) becomes the uncertainty.
    """
    utc_ns = parse_time_ns(tpv.get("time"))
    if utc_ns is None:
        return TimeQuality(TimeSource.UNSYNCED, synced=False)
    ept = _num(tpv, "ept", *_NONNEGATIVE)
    uncertainty = round(ept * _NS_PER_S) if ept is not None else None
    return TimeQuality(TimeSource.GNSS, synced=fix_mode(tpv) is not FixMode.NO_FIX, uncertainty_ns=uncertainty)


@dataclass(frozen=True, slots=True)
class Report:
    """A fix ready for the consumer and the quality of its UTC."""

    fix: GnssFix
    time_quality: TimeQuality


class EpochAssembler:
    """Turns gpsd's report stream into one fix per TPV, joined with the epoch's GST and SKY.

    gpsd sends a receiver's GST *after* the TPV of the same epoch, so once a device has sent
    a GST (even an empty one before its first fix), a TPV with a fix is held until its GST
    arrives, the next TPV arrives, or the caller's :meth:`flush` (after ``hold_ns`` without
    either). Not thread-safe: one reader.
    """

    def __init__(self, hold_ns: int = 300_000_000) -> None:
        self.hold_ns = hold_ns
        self._pending: tuple[dict[str, object], int] | None = None  # (TPV, mono_ns received)
        self._gst_seen = False
        self._satellites: int | None = None
        self.devices: list[str] = []
        self.errors: list[str] = []

    def feed(self, report: Mapping[str, object], mono_ns: int) -> list[Report]:
        """Add one report received at ``mono_ns``; return the fixes it completes, oldest first."""
        kind = report.get("class")
        out: list[Report] = []
        if kind == "TPV":
            out += self.flush()
            tpv = dict(report)
            if self._gst_seen and parse_time_ns(tpv.get("time")) is not None and fix_mode(tpv) is not FixMode.NO_FIX:
                self._pending = (tpv, mono_ns)
            else:
                out.append(self._make(tpv, mono_ns, None))
        elif kind == "GST":
            self._gst_seen = True  # even an empty GST (before a fix) says this receiver sends them
            gst_time = parse_time_ns(report.get("time"))
            pending = self._pending
            if gst_time is not None and pending is not None and parse_time_ns(pending[0].get("time")) == gst_time:
                self._pending = None
                out.append(self._make(pending[0], pending[1], report))
        elif kind == "SKY":
            self._satellites = satellites_used(report)
        elif kind == "DEVICES":
            devices = report.get("devices")
            if isinstance(devices, list):
                self.devices = [str(d.get("path")) for d in devices if isinstance(d, dict)]
        elif kind == "DEVICE":
            path = str(report.get("path"))
            if report.get("activated") in (0, None, "") and "activated" in report:
                self.devices = [d for d in self.devices if d != path]  # receiver unplugged
            elif path not in self.devices:
                self.devices.append(path)
        elif kind == "ERROR":
            self.errors.append(str(report.get("message", "")))
        return out

    def due(self, now_ns: int) -> bool:
        """Whether a held TPV has waited ``hold_ns`` for its GST."""
        return self._pending is not None and now_ns - self._pending[1] >= self.hold_ns

    def hold_left_ns(self, now_ns: int) -> int | None:
        """How much longer a held TPV waits for its GST (None: nothing held)."""
        if self._pending is None:
            return None
        return max(0, self._pending[1] + self.hold_ns - now_ns)

    def flush(self) -> list[Report]:
        """The held TPV, without GST, if any."""
        if self._pending is None:
            return []
        tpv, received = self._pending
        self._pending = None
        return [self._make(tpv, received, None)]

    def _make(self, tpv: Mapping[str, object], mono_ns: int, gst: Mapping[str, object] | None) -> Report:
        return Report(fix_from_tpv(tpv, mono_ns, gst, self._satellites), time_quality(tpv))
