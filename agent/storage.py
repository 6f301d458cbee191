"""Storage policy: free-space levels with hysteresis, retention of acknowledged footage, and the maintainer.

The one rule: nothing headquarters has not acknowledged is ever deleted. When space runs low the
unit degrades step by step instead (:class:`StorageLevel`), and only the local copies of
acknowledged entries (state 'acknowledged' with a receipt) are removed: after
``storage.keep_acknowledged_s``, or sooner, oldest first, while free space is below the warning
threshold. A deleted entry keeps its index row for good (``local_deleted_utc_ns``), as proof
that it existed, and every deletion and level change is in the audit log.

The pure core (:func:`thresholds_for`, :func:`next_level`, :func:`retention_plan`, ...) lives in
:mod:`agent.storage_policy` (re-exported here) and takes everything as arguments;
:class:`StorageMaintainer` is the I/O shell around it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from agent import fsutil
from agent.reserve import ReserveError, SpaceReserve
from agent.storage_policy import (
    CONTAINER_OVERHEAD,
    CRITICAL_RECORDING_S,
    DEGRADED_INTERVAL_S,
    FULL_RECORDING_S,
    HYSTERESIS_MIN_BYTES,
    HYSTERESIS_RECORDING_S,
    INDEX_MARGIN_BYTES,
    LEVEL_ALARMS,
    MIB,
    MIN_RECORDING_BPS,
    NS_PER_S,
    RESERVE_RECORDING_S,
    THERMAL_RAW_BPS,
    WARN_FLOOR_BYTES,
    WARN_FLOOR_DISK_DIVISOR,
    WARN_RECORDING_S,
    StorageLevel,
    StorageThresholds,
    deletable,
    disk_bytes,
    hours_left,
    level_for,
    next_level,
    recording_bytes_per_second,
    retention_expired,
    retention_plan,
    ring_first,
    thresholds_for,
)
from agent.store import RingEntry, Segment, Store
from hal.clock import Clock

__all__ = [
    "CONTAINER_OVERHEAD",
    "CRITICAL_RECORDING_S",
    "DEGRADED_INTERVAL_S",
    "FULL_RECORDING_S",
    "HYSTERESIS_MIN_BYTES",
    "HYSTERESIS_RECORDING_S",
    "INDEX_MARGIN_BYTES",
    "LEVEL_ALARMS",
    "MIB",
    "MIN_RECORDING_BPS",
    "NS_PER_S",
    "RESERVE_RECORDING_S",
    "StorageLevel",
    "StorageThresholds",
    "THERMAL_RAW_BPS",
    "WARN_FLOOR_BYTES",
    "WARN_FLOOR_DISK_DIVISOR",
    "WARN_RECORDING_S",
    "deletable",
    "disk_bytes",
    "hours_left",
    "level_for",
    "next_level",
    "recording_bytes_per_second",
    "retention_expired",
    "retention_plan",
    "thresholds_for",
    "LevelCallback", "RetentionPass", "StorageMaintainer",
]

log = logging.getLogger(__name__)

LevelCallback = Callable[[StorageLevel, StorageLevel, int], None]


def _ignore_level(old: StorageLevel, new: StorageLevel, free_bytes: int) -> None:
    return None


@dataclasses.dataclass(frozen=True, slots=True)
class RetentionPass:
    """What one retention pass removed, and how many removals failed."""

    utc_ns: int
    files: int
    bytes: int
    failed: int


class RingSpace(Protocol):
    """The background ring as storage sees it (``agent.background.BackgroundRecorder``)."""

    def entries(self) -> list[RingEntry]: ...

    def remove(self, entries: list[RingEntry], why: str) -> int: ...


class StorageMaintainer:
    """Watches free space in the data dir and removes acknowledged footage past retention.

    A thread of its own so a slow disk never stalls the recorder. Each pass (one at once, under
    a lock): measure free space, apply :func:`retention_plan`, and move the level along
    :func:`next_level`. Retention runs first so an alarm reflects the space left after freeing
    what may be freed; its failures are logged and never keep the level from being updated.
    On a level change ``on_level(old, new, free_bytes)`` is called on the pass's thread (it
    should only post to the recorder), then the change is audited; a callback that raises is
    logged and called again on the next pass with the same ``old``, until it succeeds.
    :meth:`space_fault` (a write found the disk full) runs a pass at once and calls
    ``on_level`` even if the level did not change, so the recorder hears the measurement.

    With a :class:`~agent.reserve.SpaceReserve`, the part of it released to sign events counts
    as used, not free; once that much is really free again, the pass fills the reserve back.
    A file is unlinked, its directory synced, then its row marked, so a crash in between
    leaves a missing file that the next pass records, never a marked row with its file present.

    Thread contract: ``start``, ``stop``, ``run_pass`` and ``get_status`` from any thread.
    """

    def __init__(
        self,
        data_dir: Path,
        store: Store,
        clock: Clock,
        thresholds: StorageThresholds,
        keep_acknowledged_s: float,
        interval_s: float = 10.0,
        on_level: LevelCallback = _ignore_level,
        *,
        bytes_per_second: float,
        free_bytes: Callable[[Path], int] = fsutil.free_bytes,
        os_calls: fsutil.OsCalls | None = None,
        actor: str = "storage",
        reserve: SpaceReserve | None = None,
        degraded_interval_s: float = DEGRADED_INTERVAL_S,
        ring: RingSpace | None = None,
    ) -> None:
        if not interval_s > 0 or not keep_acknowledged_s >= 0 or not bytes_per_second > 0:
            raise ValueError("interval_s and bytes_per_second must be > 0, keep_acknowledged_s >= 0")
        self._data_dir = data_dir
        self._store = store
        self._clock = clock
        self._thresholds = thresholds
        self._keep_s = keep_acknowledged_s
        self._interval_s = interval_s
        self._on_level = on_level
        self._bps = bytes_per_second
        self._measure = free_bytes
        self._os = os_calls or fsutil.OsCalls()
        self._actor = actor
        self._reserve = reserve
        self._ring = ring
        self._degraded_interval_s = min(degraded_interval_s, interval_s)
        self._force_report = threading.Event()  # set by space_fault: report the next level regardless
        self._wake = threading.Event()
        self._pass_lock = threading.Lock()  # one pass at once; guards _reported and _failed_unlinks
        self._reported = StorageLevel.OK  # the level on_level last accepted
        self._failed_unlinks: dict[int, str] = {}  # seq -> error already logged and audited
        self._lock = threading.Lock()  # guards the fields below, read by get_status
        self._level = StorageLevel.OK
        self._free: int | None = None
        self._last_pass_utc_ns: int | None = None
        self._last_error: str | None = None
        self._last_retention: RetentionPass | None = None
        self._deleted_files = 0
        self._deleted_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="storage", daemon=True)

    @property
    def level(self) -> StorageLevel:
        with self._lock:
            return self._level

    def start(self) -> None:
        """Start the thread; its first pass runs at once, then one every ``interval_s``."""
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """End the thread after the pass in progress (waits at most ``timeout_s``)."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def space_fault(self) -> None:
        """A write found the disk full: measure now and report the level even if unchanged."""
        self._force_report.set()
        self._wake.set()

    def _run(self) -> None:
        self._pass_logged()
        while not self._stop.is_set():
            self._wake.wait(self._next_interval_s())
            self._wake.clear()
            if self._stop.is_set():
                return
            self._pass_logged()

    def _next_interval_s(self) -> float:
        degraded = self.level is StorageLevel.EXHAUSTED or (self._reserve is not None and self._reserve.missing_bytes)
        return self._degraded_interval_s if degraded else self._interval_s

    def _pass_logged(self) -> None:
        try:
            self.run_pass()
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
            with self._lock:
                repeated, self._last_error = message == self._last_error, message
            if repeated:
                log.debug("storage pass on %s still failing: %s", self._data_dir, message)
            else:
                log.exception("storage pass on %s failed (level stays %s); retrying every %.0f s",
                              self._data_dir, self.level.value, self._interval_s)

    def run_pass(self) -> StorageLevel:
        """One pass, on the caller's thread; returns the level. Raises when free space cannot be
        measured or the store fails while recording a level change."""
        with self._pass_lock:
            free = self._free_now()
            now = self._clock.utc_ns()
            error: str | None = None
            try:
                if self._free_ring(free):  # the background ring gives way before any evidence
                    free = self._free_now()
                retention = self._retain(free, now)
            except Exception as exc:
                log.exception("storage retention pass on %s failed", self._data_dir)
                error = f"retention: {type(exc).__name__}: {exc}"
                retention = RetentionPass(now, 0, 0, 0)
            if retention.files:
                free = self._free_now()
            with self._lock:
                self._free, self._last_pass_utc_ns, self._last_error = free, now, error
                self._last_retention = retention
                self._deleted_files += retention.files
                self._deleted_bytes += retention.bytes
            return self._update_level(free)

    def _free_now(self) -> int:
        """Free bytes, the reserve's missing part counted as used; refills the reserve when the
        space is there (which leaves the figure as it was)."""
        free = self._measure(self._data_dir)
        if self._reserve is None:
            return free
        missing = self._reserve.missing_bytes
        if missing and free >= missing + self._reserve.step_bytes:
            try:
                self._reserve.fill()
            except ReserveError as exc:
                log.error("storage: %s", exc)
            free = self._measure(self._data_dir)
        return max(0, free - self._reserve.missing_bytes)

    # -- retention ------------------------------------------------------------------------------

    def _free_ring(self, free: int) -> int:
        """The background ring first (``ring_first``); the bytes it freed."""
        if self._ring is None:
            return 0
        chosen = ring_first(self._ring.entries(), free, self._thresholds)
        if not chosen:
            return 0
        freed = self._ring.remove(chosen, "storage pressure")
        self._store.audit(self._actor, "ring-free", "background", "ok", entries=len(chosen), bytes=freed,
                          free_bytes=free, first_seq=chosen[0].seq, last_seq=chosen[-1].seq)
        return freed

    def _retain(self, free: int, now: int) -> RetentionPass:
        candidates = {s.seq: s for s in self._store.local_acknowledged()}
        plan = retention_plan(list(candidates.values()), now, self._keep_s, free, self._thresholds,
                              protect=self._store.chain_head_seqs())
        removed: list[tuple[Segment, bool]] = []  # (entry, its file was already gone)
        failed = 0
        for seq in plan:
            seg = candidates[seq]
            path = self._data_dir / seg.path
            try:
                self._os.unlink(os.fspath(path))
                removed.append((seg, False))
            except FileNotFoundError:
                removed.append((seg, True))
            except OSError as exc:
                failed += 1
                self._unlink_failed(seg, exc)
        for directory in {(self._data_dir / seg.path).parent for seg, _ in removed}:
            try:
                fsutil.fsync_dir(directory)
            except OSError as exc:
                log.warning("storage: syncing %s after deletions: %s", directory, exc)
        freed = 0
        for seg, absent in removed:
            reason = "age" if retention_expired(seg, now, self._keep_s) else "space"
            extra = {"already_absent": True} if absent else {}
            self._store.mark_deleted_local(seg.seq, actor=self._actor, reason=reason, free_bytes=free, **extra)
            self._failed_unlinks.pop(seg.seq, None)
            freed += 0 if absent else seg.size_bytes
            log.info("storage: deleted acknowledged seq %d (%s, %d bytes, %s)", seg.seq, seg.path,
                     seg.size_bytes, "already absent" if absent else reason)
        return RetentionPass(now, len(removed), freed, failed)

    def _unlink_failed(self, seg: Segment, exc: OSError) -> None:
        # Audited and logged once per entry and error, not every pass: the audit log is forever.
        message = f"{exc.strerror or exc}"
        if self._failed_unlinks.get(seg.seq) == message:
            return
        self._failed_unlinks[seg.seq] = message
        log.error("storage: cannot delete acknowledged seq %d (%s): %s", seg.seq, seg.path, message)
        self._store.audit(self._actor, "delete-local", seg.path, "failed", seq=seg.seq, error=message)

    # -- levels ---------------------------------------------------------------------------------

    def _update_level(self, free: int) -> StorageLevel:
        with self._lock:
            old = self._level
            new = self._level = next_level(old, free, self._thresholds)
        left = self._recording_hours_left(free)
        if new is not old:
            log.log(logging.WARNING if new.severity > old.severity else logging.INFO,
                    "storage %s -> %s: %d bytes free, %.2f h of recording left%s", old.value, new.value,
                    free, left, f" ({LEVEL_ALARMS[new]})" if LEVEL_ALARMS[new] else "")
        forced = self._force_report.is_set()
        if self._reported is not new or forced:
            try:
                self._force_report.clear()
                self._on_level(self._reported, new, free)
                self._reported = new
            except Exception:
                if forced:
                    self._force_report.set()
                log.exception("storage: level callback for %s -> %s failed; retrying next pass",
                              self._reported.value, new.value)
        if new is not old:
            self._store.audit(self._actor, "storage-level", new.value, "ok", previous=old.value, free_bytes=free,
                              hours_left=round(left, 3), below_bytes=self._thresholds.below(new),
                              alarm=LEVEL_ALARMS[new])
        return new

    def _recording_hours_left(self, free: int) -> float:
        # Recording stops at the reserve, not at an empty disk.
        return hours_left(free - self._thresholds.reserve_free_bytes, self._bps)

    def get_status(self) -> dict[str, Any]:
        """For the console and health report: level, alarm, free space, hours of recording left
        (down to the reserve, where recording stops), thresholds, the last pass and retention,
        and deletions since start. Before the first pass, free space and hours left are None."""
        with self._lock:
            free, level, retention = self._free, self._level, self._last_retention
            status: dict[str, Any] = {
                "level": level.value,
                "alarm": LEVEL_ALARMS[level] or None,
                "free_bytes": free,
                "hours_left": None if free is None else round(self._recording_hours_left(free), 3),
                "bytes_per_second": self._bps,
                "thresholds": dataclasses.asdict(self._thresholds),
                "keep_acknowledged_s": self._keep_s,
                "last_pass_utc_ns": self._last_pass_utc_ns,
                "last_error": self._last_error,
                "last_retention": None if retention is None else dataclasses.asdict(retention),
                "deleted_files_total": self._deleted_files,
                "deleted_bytes_total": self._deleted_bytes,
            }
        if self._reserve is not None:
            status["reserve"] = self._reserve.get_status()
        return status
