"""How the sync worker paces itself, from a unit's ``[sync]`` section."""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.backoff import Backoff
from agent.config import SyncConfig
from agent.sync.client import Timeouts


@dataclass(frozen=True, slots=True)
class SyncSettings:
    """How the worker paces itself (seconds unless named otherwise).

    ``interval_s``: how often to look for new entries when idle. ``heartbeat_s``: status to HQ
    this often while reachable. ``bandwidth_bps``: upload cap in bits per second, 0 for none.
    ``chunk_bytes``: bytes per PATCH, at most 4 MiB; after a cut at most this much is sent twice.
    ``auth_retry_s``: after a 401/403, uploads stop and only a heartbeat probes this often.
    ``entry_retry_s``: an entry that failed on its own (unreadable file, conflict, bad
    receipt, a refusal without a valid signed notice) waits this long while the rest of the
    backlog goes on.
    """

    interval_s: float = 5.0
    heartbeat_s: float = 60.0
    bandwidth_bps: int = 0
    chunk_bytes: int = 1024 * 1024
    timeouts: Timeouts = field(default_factory=Timeouts)
    backoff: Backoff = field(default_factory=Backoff)
    auth_retry_s: float = 900.0
    entry_retry_s: float = 600.0

    @classmethod
    def from_config(cls, sync: SyncConfig) -> SyncSettings:
        """The settings of a unit's ``[sync]`` section."""
        return cls(
            interval_s=sync.interval_s,
            heartbeat_s=sync.heartbeat_s,
            bandwidth_bps=sync.bandwidth_bps,
            chunk_bytes=sync.chunk_bytes,
            timeouts=Timeouts(sync.connect_timeout_s, sync.io_timeout_s, sync.ingest_timeout_s,
                              sync.request_deadline_s),
            backoff=Backoff(min(1.0, sync.backoff_max_s), sync.backoff_max_s),
        )
