"""Storage policy, the pure core: free-space levels with hysteresis, the thresholds derived from
the recording bitrate, and which acknowledged entries retention may remove (see
:mod:`agent.storage` for the rule and the maintainer that applies it)."""

from __future__ import annotations

import dataclasses
import enum
import math
import os
from collections.abc import Collection, Sequence

from agent import fsutil
from agent.background.policy import to_free
from agent.config import STORAGE_THRESHOLD_KEYS, Config, ConfigError, StorageConfig
from agent.store import RingEntry, Segment

NS_PER_S = 1_000_000_000
MIB = 2**20

# Derived thresholds: this much recording at the configured bitrate, on top of INDEX_MARGIN_BYTES,
# which keeps room for the SQLite index and WAL, the state file and the chain's event entries
# (a sealed segment's last chunk, a 'storage-full' event, 'shutdown') once recording has stopped.
WARN_RECORDING_S = 3600.0
CRITICAL_RECORDING_S = 900.0
FULL_RECORDING_S = 300.0
RESERVE_RECORDING_S = 60.0
INDEX_MARGIN_BYTES = 64 * MIB
# Getac warns below 4 GB free; on a small disk that would be most of it, so the floor is at
# most an eighth of the disk when its size is known.
WARN_FLOOR_BYTES = 4_000_000_000
WARN_FLOOR_DISK_DIVISOR = 8
# A level is left only once free space is this far above its threshold, so the alarm does
# not flap while recording eats what retention just freed.
HYSTERESIS_RECORDING_S = 60.0
HYSTERESIS_MIN_BYTES = 16 * MIB
# While the disk is exhausted or the space reserve is on loan, free space is measured this often,
# so the level goes back up (and the reserve is filled again) soon after space is freed.
DEGRADED_INTERVAL_S = 1.0

# For recording_bytes_per_second: Matroska framing, chunk tags and manifests on top of the
# streams; and a FLIR Lepton's raw rate (160x120, 16 bit, 9 Hz), an upper bound for lossless FFV1.
CONTAINER_OVERHEAD = 1.02
THERMAL_RAW_BPS = 160 * 120 * 16 * 9
MIN_RECORDING_BPS = 100_000


class StorageLevel(enum.Enum):
    """How much room is left, from best to worst; what the recorder does at each level.

    - ``OK``: nothing to do.
    - ``LOW``: warn (status, indicator, audit log); nothing stops.
    - ``CRITICAL``: give up the pre-event buffer; recordings still start.
    - ``FULL``: refuse new recordings with a clear alarm; the ongoing one continues.
    - ``EXHAUSTED``: below the hard reserve: stop the ongoing recording now, so its last
      segment seals cleanly in the reserved space instead of failing mid-write.
    """

    OK = "ok"
    LOW = "low"
    CRITICAL = "critical"
    FULL = "full"
    EXHAUSTED = "exhausted"

    @property
    def severity(self) -> int:
        """0 for OK up to 4 for EXHAUSTED."""
        return _SEVERITY[self]


_SEVERITY = {level: i for i, level in enumerate(StorageLevel)}

LEVEL_ALARMS: dict[StorageLevel, str] = {
    StorageLevel.OK: "",
    StorageLevel.LOW: "storage low: upload or dock soon",
    StorageLevel.CRITICAL: "storage critical: pre-event buffer given up",
    StorageLevel.FULL: "storage full: new recordings refused",
    StorageLevel.EXHAUSTED: "storage exhausted: recording stopped and sealed",
}


@dataclasses.dataclass(frozen=True, slots=True)
class StorageThresholds:
    """Free bytes below which each level applies (warn: LOW ... reserve: EXHAUSTED), and the
    hysteresis margin above a threshold that free space must reach to leave its level."""

    warn_free_bytes: int
    critical_free_bytes: int
    full_free_bytes: int
    reserve_free_bytes: int
    hysteresis_bytes: int = HYSTERESIS_MIN_BYTES

    def __post_init__(self) -> None:
        values = [getattr(self, key) for key in STORAGE_THRESHOLD_KEYS]
        if min(*values, self.hysteresis_bytes) < 0:
            raise ValueError(f"storage thresholds must not be negative: {self}")
        if values != sorted(values, reverse=True):
            raise ValueError(f"storage thresholds must be warn >= critical >= full >= reserve: {self}")

    def below(self, level: StorageLevel) -> int:
        """Free bytes below which ``level`` (or worse) applies; 0 for OK, which always may."""
        return {
            StorageLevel.OK: 0,
            StorageLevel.LOW: self.warn_free_bytes,
            StorageLevel.CRITICAL: self.critical_free_bytes,
            StorageLevel.FULL: self.full_free_bytes,
            StorageLevel.EXHAUSTED: self.reserve_free_bytes,
        }[level]


def recording_bytes_per_second(config: Config) -> float:
    """What a recording writes per second with this config: every enabled camera at the video
    bitrate, the microphone, the thermal camera at its raw rate, plus container overhead
    (at least MIN_RECORDING_BPS, so a unit with nothing enabled still gets sane thresholds)."""
    rec = config.recording
    bits = sum(rec.video_bitrate_bps for camera in config.cameras.values() if camera.enabled)
    if config.microphone.enabled:
        bits += rec.audio_bitrate_bps
    if config.thermal.enabled:
        bits += THERMAL_RAW_BPS
    return max(bits, MIN_RECORDING_BPS) / 8 * CONTAINER_OVERHEAD


def thresholds_for(
    storage: StorageConfig, bytes_per_second: float, *, disk_bytes: int | None = None
) -> StorageThresholds:
    """The thresholds to use: each explicit (non-zero) config value as is, each 0 derived.

    Derived: ``n`` seconds of recording at ``bytes_per_second`` plus INDEX_MARGIN_BYTES, with
    n = 3600 (warn), 900 (critical), 300 (full), 60 (reserve); warn is at least 4 GB, or an
    eighth of ``disk_bytes`` if that is smaller. A derived value is clamped between its explicit
    neighbours so the order holds (an explicit reserve above the derived full lifts full to it).
    Raises :class:`ConfigError` naming the keys when explicit values are out of order, and
    ValueError for a rate that is not positive.
    """
    if not (math.isfinite(bytes_per_second) and bytes_per_second > 0):
        raise ValueError(f"bytes_per_second must be positive, got {bytes_per_second}")
    wrong = storage.misordered()
    if wrong is not None:
        key, higher = wrong
        raise ConfigError(f"storage.{key}", f"{getattr(storage, key)} exceeds storage.{higher} "
                          f"({getattr(storage, higher)})")

    def recording(duration_s: float) -> int:
        return math.ceil(duration_s * bytes_per_second) + INDEX_MARGIN_BYTES

    floor = WARN_FLOOR_BYTES if disk_bytes is None else min(WARN_FLOOR_BYTES, disk_bytes // WARN_FLOOR_DISK_DIVISOR)
    derived = dict(zip(STORAGE_THRESHOLD_KEYS, (
        max(recording(WARN_RECORDING_S), floor), recording(CRITICAL_RECORDING_S),
        recording(FULL_RECORDING_S), recording(RESERVE_RECORDING_S)), strict=True))
    explicit = {key: getattr(storage, key) for key in STORAGE_THRESHOLD_KEYS if getattr(storage, key)}
    values: dict[str, int] = {}
    for i, key in enumerate(STORAGE_THRESHOLD_KEYS):
        if key in explicit:
            values[key] = explicit[key]
            continue
        above = [explicit[k] for k in STORAGE_THRESHOLD_KEYS[:i] if k in explicit]
        below = [explicit[k] for k in STORAGE_THRESHOLD_KEYS[i + 1:] if k in explicit]
        values[key] = min([max([derived[key], *below]), *above])
    hysteresis = max(HYSTERESIS_MIN_BYTES, math.ceil(HYSTERESIS_RECORDING_S * bytes_per_second))
    return StorageThresholds(**values, hysteresis_bytes=hysteresis)


def level_for(free_bytes: int, thresholds: StorageThresholds, margin_bytes: int = 0) -> StorageLevel:
    """The level for ``free_bytes`` with every threshold raised by ``margin_bytes`` (no hysteresis)."""
    for level in reversed(StorageLevel):
        if level is not StorageLevel.OK and free_bytes < thresholds.below(level) + margin_bytes:
            return level
    return StorageLevel.OK


def next_level(current: StorageLevel, free_bytes: int, thresholds: StorageThresholds) -> StorageLevel:
    """The level after ``current`` for ``free_bytes``: a worse level applies at once, a better
    one only once free space is ``hysteresis_bytes`` above the thresholds it clears."""
    worse = level_for(free_bytes, thresholds)
    if worse.severity >= current.severity:
        return worse
    better = level_for(free_bytes, thresholds, thresholds.hysteresis_bytes)
    return better if better.severity < current.severity else current


def hours_left(free_bytes: int, bytes_per_second: float) -> float:
    """Hours of recording ``free_bytes`` holds at ``bytes_per_second`` (never negative)."""
    if not bytes_per_second > 0:
        raise ValueError(f"bytes_per_second must be positive, got {bytes_per_second}")
    return max(0, free_bytes) / bytes_per_second / 3600


def deletable(segment: Segment) -> bool:
    """Whether retention may ever remove this entry's file: acknowledged by headquarters with a
    receipt, and not removed already. Nothing sealed, uploading, quarantined or open, ever."""
    return (segment.state == "acknowledged" and segment.receipt is not None
            and segment.local_deleted_utc_ns is None)


def retention_expired(segment: Segment, now_utc_ns: int, keep_acknowledged_s: float) -> bool:
    """Whether the local copy has been kept ``keep_acknowledged_s`` since acknowledgement.

    The row's last update stands for the acknowledgement time: it is that moment or later, so
    a copy never goes earlier than promised (and a clock stepped backwards deletes nothing)."""
    return now_utc_ns - segment.updated_utc_ns >= round(keep_acknowledged_s * NS_PER_S)


def retention_plan(
    segments: Sequence[Segment],
    now_utc_ns: int,
    keep_acknowledged_s: float,
    free_bytes: int,
    thresholds: StorageThresholds,
    *,
    protect: Collection[int] = frozenset(),
) -> list[int]:
    """Seqs whose local file may be deleted now, in ascending seq (oldest first) order.

    Only :func:`deletable` entries not in ``protect`` (the chain heads) are chosen: all whose
    retention has expired, then, while ``free_bytes`` plus what is planned stays below
    ``warn_free_bytes + hysteresis_bytes`` (so the LOW level can clear), more, oldest first.
    """
    eligible = sorted((s for s in segments if deletable(s) and s.seq not in protect), key=lambda s: s.seq)
    plan = {s.seq: s.size_bytes for s in eligible if retention_expired(s, now_utc_ns, keep_acknowledged_s)}
    freed = sum(plan.values())
    target = thresholds.warn_free_bytes + thresholds.hysteresis_bytes
    for s in eligible:
        if free_bytes + freed >= target:
            break
        if s.seq not in plan:
            plan[s.seq] = s.size_bytes
            freed += s.size_bytes
    return sorted(plan)


def ring_first(ring: Sequence[RingEntry], free_bytes: int, thresholds: StorageThresholds) -> list[RingEntry]:
    """Under storage pressure the background ring gives way before any evidence: its oldest
    entries, while free space stays below where the LOW level clears (``warn_free_bytes +
    hysteresis_bytes``, as :func:`retention_plan`). Acknowledged evidence goes next, counting
    what this freed; unacknowledged evidence never."""
    target = thresholds.warn_free_bytes + thresholds.hysteresis_bytes
    return [] if free_bytes >= target else to_free(ring, target - free_bytes)


def disk_bytes(path: str | os.PathLike[str]) -> int:
    """Total size of the filesystem holding ``path``."""
    try:
        st = os.statvfs(os.fspath(path))
    except OSError as e:
        raise fsutil.StorageError(e.errno, f"Reading disk size: {e.strerror}", os.fspath(path)) from e
    return st.f_blocks * st.f_frsize
