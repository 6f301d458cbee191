"""Generate drivers/data/track.nmea: a 10-minute 1 Hz walk round a city block, as a receiver logs it.

Deterministic for a seed. The walk is a closed loop, so a looping replay does not jump; the
first seconds have no fix, as after a cold start. Each epoch is RMC, GGA, GSA, GST with valid
checksums and CR/LF endings, readable by the simulated receiver and by gpsd's ``gpsfake``.
Stdlib only: ``python3 scripts/make_track_nmea.py [--output PATH] [--seed N]``.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import math
import random
from pathlib import Path

log = logging.getLogger("make_track_nmea")

LAT0_DEG, LON0_DEG = 51.92040, 4.47710  # a city centre street corner
START_UTC = datetime.datetime(2024, 5, 14, 9, 30, 0, tzinfo=datetime.UTC)
EPOCHS = 600
EMPTY_EPOCHS = 3  # nothing known at all
TIME_ONLY_EPOCHS = 3  # time from the satellites, no position yet
FIX_2D_EPOCHS = 2
STOPS_S = ((150, 162), (400, 412))  # waiting at crossings
# Corners of the loop in metres east, north of the start.
ROUTE_M = ((0.0, 0.0), (180.0, 10.0), (200.0, 160.0), (60.0, 190.0), (-40.0, 120.0), (0.0, 0.0))
GEOID_SEP_M = 46.1
M_PER_DEG_LAT = 111_320.0
KNOT_MPS = 1852 / 3600


def checksum(body: str) -> str:
    value = 0
    for byte in body.encode("ascii"):
        value ^= byte
    return f"{value:02X}"


def sentence(body: str) -> str:
    return f"${body}*{checksum(body)}\r\n"


def ddmm(value_deg: float, width: int) -> str:
    """Degrees as NMEA ``(d)ddmm.mmmmm`` without the hemisphere."""
    value_deg = abs(value_deg)
    degrees = int(value_deg)
    minutes = round((value_deg - degrees) * 60, 5)
    if minutes >= 60:
        degrees, minutes = degrees + 1, 0.0
    return f"{degrees:0{width}d}{minutes:08.5f}"


def position_at(distance_m: float) -> tuple[float, float, float]:
    """East, north and course along the route after ``distance_m`` (wrapping round the loop)."""
    legs = list(zip(ROUTE_M, ROUTE_M[1:], strict=False))
    total = sum(math.dist(a, b) for a, b in legs)
    distance_m %= total
    for a, b in legs:
        length = math.dist(a, b)
        if distance_m <= length:
            f = distance_m / length
            course = math.degrees(math.atan2(b[0] - a[0], b[1] - a[1])) % 360
            return a[0] + f * (b[0] - a[0]), a[1] + f * (b[1] - a[1]), course
        distance_m -= length
    return ROUTE_M[0][0], ROUTE_M[0][1], 0.0


def speeds(rng: random.Random) -> list[float]:
    """Walking speed each second, scaled so that the walk ends where it started."""
    total = sum(math.dist(a, b) for a, b in zip(ROUTE_M, ROUTE_M[1:], strict=False))
    raw = []
    for t in range(EPOCHS):
        stopped = any(lo <= t < hi for lo, hi in STOPS_S)
        raw.append(0.0 if stopped else 1.0 + 0.1 * math.sin(2 * math.pi * t / 47) + rng.gauss(0, 0.03))
    scale = total / sum(raw)
    return [v * scale for v in raw]


class Ar1:
    """A slowly wandering error, as GNSS position errors are: AR(1) with stationary sigma ``sigma``."""

    def __init__(self, rng: random.Random, sigma: float, keep: float = 0.95) -> None:
        self.rng, self.sigma, self.keep = rng, sigma, keep
        self.value = rng.gauss(0, sigma)

    def step(self) -> float:
        self.value = self.keep * self.value + self.rng.gauss(0, self.sigma * math.sqrt(1 - self.keep**2))
        return self.value


def epoch_lines(t: int, distance_m: float, speed_mps: float, errors: dict[str, Ar1], rng: random.Random) -> list[str]:
    """The four sentences of second ``t`` of the walk."""
    utc = START_UTC + datetime.timedelta(seconds=t)
    hms, dmy = f"{utc:%H%M%S}.00", f"{utc:%d%m%y}"
    if t < EMPTY_EPOCHS:
        return [
            sentence("GPRMC,,V,,,,,,,,,,N"),
            sentence("GPGGA,,,,,,0,00,99.99,,,,,,"),
            sentence("GPGSA,A,1,,,,,,,,,,,,,99.99,99.99,99.99"),
            sentence("GPGST,,,,,,,,"),
        ]
    if t < EMPTY_EPOCHS + TIME_ONLY_EPOCHS:
        return [
            sentence(f"GPRMC,{hms},V,,,,,,,{dmy},,,N"),
            sentence(f"GPGGA,{hms},,,,,0,03,99.99,,,,,,"),
            sentence("GPGSA,A,1,,,,,,,,,,,,,99.99,99.99,99.99"),
            sentence(f"GPGST,{hms},,,,,,,"),
        ]
    east, north, course = position_at(distance_m)
    east, north = east + errors["east"].step(), north + errors["north"].step()
    lat = LAT0_DEG + north / M_PER_DEG_LAT
    lon = LON0_DEG + east / (M_PER_DEG_LAT * math.cos(math.radians(LAT0_DEG)))
    alt = 3.0 + errors["alt"].step()
    speed = max(0.0, speed_mps + rng.gauss(0, 0.05))
    course_field = f"{course:.2f}" if speed > 0.3 else ""
    sats = 9 + round(2 * math.sin(t / 90) + rng.uniform(-0.5, 0.5))
    hdop = 1.0 + 0.4 * math.sin(t / 70) + rng.uniform(0, 0.1)
    prns = sorted(rng.sample([2, 5, 7, 9, 13, 14, 15, 17, 19, 20, 24, 28, 30], min(sats, 12)))
    is_3d = t >= EMPTY_EPOCHS + TIME_ONLY_EPOCHS + FIX_2D_EPOCHS
    lat_sd, lon_sd = 1.2 * hdop + rng.uniform(0, 0.4), 1.0 * hdop + rng.uniform(0, 0.4)
    alt_sd = 2.2 * hdop + rng.uniform(0, 0.6)
    ns, ew = ("N" if lat >= 0 else "S"), ("E" if lon >= 0 else "W")
    pos = f"{ddmm(lat, 2)},{ns},{ddmm(lon, 3)},{ew}"
    alt_fields = f"{alt:.1f},M,{GEOID_SEP_M:.1f},M" if is_3d else ",,,"
    prn_fields = ",".join([f"{p:02d}" for p in prns] + [""] * (12 - len(prns)))
    return [
        sentence(f"GPRMC,{hms},A,{pos},{speed / KNOT_MPS:.3f},{course_field},{dmy},,,A"),
        sentence(f"GPGGA,{hms},{pos},1,{sats:02d},{hdop:.2f},{alt_fields},,"),
        sentence(f"GPGSA,A,{3 if is_3d else 2},{prn_fields},{1.7 * hdop:.2f},{hdop:.2f},{1.3 * hdop:.2f}"),
        sentence(
            f"GPGST,{hms},{8 + 4 * hdop:.1f},{max(lat_sd, lon_sd):.1f},{min(lat_sd, lon_sd):.1f},"
            f"{rng.uniform(0, 180):.1f},{lat_sd:.1f},{lon_sd:.1f},{alt_sd:.1f}"
        ),
    ]


def generate(seed: int) -> str:
    rng = random.Random(seed)
    per_second = speeds(rng)
    errors = {"east": Ar1(rng, 1.8), "north": Ar1(rng, 1.8), "alt": Ar1(rng, 3.0)}
    lines = [
        "# Name: bodycam simulated walk, 10 minutes at 1 Hz (generated by scripts/make_track_nmea.py)\r\n",
        f"# Seed: {seed}; starts {START_UTC:%Y-%m-%dT%H:%M:%SZ} with {EMPTY_EPOCHS + TIME_ONLY_EPOCHS} s"
        " without a fix\r\n",
    ]
    distance = 0.0
    for t in range(EPOCHS):
        lines.extend(epoch_lines(t, distance, per_second[t], errors, rng))
        distance += per_second[t]
    return "".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parent.parent / "drivers" / "data" / "track.nmea"
    parser.add_argument("--output", type=Path, default=default)
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.output.write_bytes(generate(args.seed).encode("ascii"))
    log.info("wrote %s", args.output)


if __name__ == "__main__":
    main()
