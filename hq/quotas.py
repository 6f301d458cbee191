"""Per-unit quotas (what one enrolled, or stolen, unit may hold at headquarters): the limits,
one declaration each, the pure decisions over them, and the heartbeat rate limiter.

The defaults, and why:

- ``open_uploads`` 8: uploads not yet ingested (receiving, complete, ingesting). A unit sends
  one entry at a time and keeps a few more open when a priority entry preempts one.
- ``bytes_in_flight`` 8 GiB: the sum of those uploads' ``Upload-Length``; a few segments at once.
- ``upload_length_max_bytes`` 4 GiB: one segment's bound, advertised as ``Tus-Max-Size``.
- ``heartbeat_interval_s`` 5 s with a burst of 3: a unit beats once a minute; more than one
  every 5 s (and, over all nodes, more than 3 in 15 s) is refused ``429`` with ``Retry-After``
  and not stored.
- ``abandoned_after_s`` 24 h: an upload that received nothing for this long expires: its staged
  bytes are removed, its state becomes ``expired`` and the expiry is audited.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from hq.audit import Auditor
from hq.errors import ApiError
from hq.index import Index
from hq.storage import UploadStore

GIB = 1024 * 1024 * 1024
NS_PER_S = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Quotas:
    """What one unit may hold at headquarters (see the module docstring for the defaults)."""

    open_uploads: int = 8
    bytes_in_flight: int = 8 * GIB
    upload_length_max_bytes: int = 4 * GIB
    heartbeat_interval_s: float = 5.0
    heartbeat_burst: int = 3
    abandoned_after_s: float = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class OpenUploads:
    """A unit's uploads not yet ingested: how many, and their declared lengths together."""

    count: int
    bytes_declared: int


def open_uploads(index: Index, device_id: str) -> OpenUploads:
    """What ``device_id`` holds open (receiving, complete or being ingested), counted by the index."""
    count, declared = index.open_uploads(device_id)
    return OpenUploads(count, declared)


def admit_upload(quotas: Quotas, held: OpenUploads, length: int) -> None:
    """Raise the refusal of a new upload of ``length`` bytes by a unit holding ``held``: 429
    past the open-upload count or the bytes in flight, with ``Retry-After`` (the unit backs off
    and retries once its open uploads are ingested). The length bound is Tus-Max-Size's (413)."""
    if held.count >= quotas.open_uploads:
        raise ApiError(429, "too-many-uploads", f"this unit already has {held.count} uploads open (at most "
                                                f"{quotas.open_uploads}): finish or terminate one first",
                       {"Retry-After": "60"})
    if held.bytes_declared + length > quotas.bytes_in_flight:
        raise ApiError(429, "too-many-bytes", f"{held.bytes_declared} bytes already in flight for this unit; "
                                              f"{length} more exceeds {quotas.bytes_in_flight}",
                       {"Retry-After": "60"})


class HeartbeatLimiter:
    """A token bucket per unit: ``heartbeat_burst`` at once, then one per ``heartbeat_interval_s``.

    The bucket is this process's; behind a load balancer a unit may reach each node's, so with
    ``count_since(device_id, since_ns)`` (the index's ``heartbeat_count_since``) a heartbeat the
    bucket allows is also refused when the unit already stored ``heartbeat_burst`` in the last
    ``heartbeat_burst`` x ``heartbeat_interval_s``, on any node (then ``Retry-After`` is that
    window: waiting it out always succeeds). Buckets of units
    that went quiet are dropped, so the table holds only the units that beat in the last burst
    window. Thread-safe (one lock; the index is asked outside it).
    """

    def __init__(self, quotas: Quotas, count_since: Callable[[str, int], int] | None = None) -> None:
        self._interval_ns = int(quotas.heartbeat_interval_s * NS_PER_S)
        self._burst = quotas.heartbeat_burst
        self._count_since = count_since
        self._guard = threading.Lock()
        self._buckets: dict[str, tuple[float, int]] = {}  # device -> (tokens, at ns)

    def wait_s(self, device_id: str, now_ns: int) -> int:
        """0 and one token taken when ``device_id`` may store a heartbeat now; else the whole
        seconds until it may (for ``Retry-After``), nothing taken."""
        if self._interval_ns <= 0:
            return 0
        wait_s = self._take(device_id, now_ns)
        if wait_s or self._count_since is None:
            return wait_s
        window_ns = self._burst * self._interval_ns
        if self._count_since(device_id, now_ns - window_ns) >= self._burst:
            return max(1, math.ceil(window_ns / NS_PER_S))  # the window is then empty of this unit's
        return 0

    def _take(self, device_id: str, now_ns: int) -> int:
        with self._guard:
            tokens, at = self._buckets.get(device_id, (float(self._burst), now_ns))
            tokens = min(float(self._burst), tokens + max(0, now_ns - at) / self._interval_ns)
            if tokens >= 1.0:
                self._buckets[device_id] = (tokens - 1.0, now_ns)
                self._forget_quiet(now_ns)
                return 0
            self._buckets[device_id] = (tokens, now_ns)
            return max(1, math.ceil((1.0 - tokens) * self._interval_ns / NS_PER_S))

    def _forget_quiet(self, now_ns: int) -> None:
        if len(self._buckets) < 1024:
            return
        full_after_ns = self._burst * self._interval_ns
        for device_id, (_, at) in list(self._buckets.items()):
            if now_ns - at >= full_after_ns:
                del self._buckets[device_id]


def expire_abandoned(
    index: Index,
    uploads: UploadStore,
    audit: Auditor,
    quotas: Quotas,
    now_ns: int,
    lock_for: Callable[[str], AbstractContextManager[object]],
) -> int:
    """Expire uploads that received nothing for ``abandoned_after_s``: state ``expired`` (one
    row update, so a PATCH that came meanwhile wins), staged bytes removed, audited. Returns how
    many. ``lock_for(upload_id)`` is the service's per-upload lock, held around each."""
    cutoff = now_ns - int(quotas.abandoned_after_s * NS_PER_S)
    expired = 0
    for upload in index.expired_uploads(cutoff):
        with lock_for(upload.upload_id):
            if not index.move_upload(upload.upload_id, "receiving", "expired", now_ns, updated_before_ns=cutoff):
                continue
            received = uploads.size(upload.upload_id)
            uploads.remove(upload.upload_id)
        audit.record("upload-expire", "hq-maintenance", f"{upload.device_id}/{upload.seq}", "ok",
                     upload_id=upload.upload_id, received_bytes=received, length=upload.length,
                     idle_s=(now_ns - upload.updated_utc_ns) // NS_PER_S)
        expired += 1
    return expired
