"""The sync worker's status: typed fields shared between its thread and readers, and the
snapshot that the console, the health report and the heartbeat read."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, fields
from typing import Any

from agent.sync.phases import Phase
from agent.sync.policy import NS_PER_S


@dataclass(slots=True)
class SyncStatus:
    """What the worker last knew. Times are monotonic ns unless named ``utc``."""

    phase: Phase
    last_progress_mono_ns: int  # the last byte confirmed (or the start): what "stalled" counts from
    connected: bool = False
    backlog_entries: int = 0
    backlog_bytes: int = 0
    current: dict[str, int] | None = None  # {"seq", "offset", "length"} of the upload going out
    last_receipt: dict[str, Any] | None = None
    last_error: dict[str, Any] | None = None
    next_retry_mono_ns: int | None = None
    alarm: dict[str, Any] | None = None
    last_heartbeat_utc_ns: int | None = None
    hq_clock_offset_ms: int | None = None
    sent_bytes: int = 0
    deferred: dict[int, int] = field(default_factory=dict)  # seq -> not retried before (monotonic ns)
    tlog: dict[str, Any] | None = None  # the checkpoint of headquarters' log the unit verified last
    tlog_fork: str | None = None  # why headquarters' log contradicts it, once seen


_NAMES = frozenset(f.name for f in fields(SyncStatus))


class StatusBoard:
    """A :class:`SyncStatus` behind a lock. Thread contract: the worker's thread writes, any
    thread reads a copy (:meth:`snapshot`, :meth:`get`)."""

    def __init__(self, now_mono_ns: int) -> None:
        self._lock = threading.Lock()
        self._status = SyncStatus(Phase.STARTING, now_mono_ns)

    def set(self, **values: Any) -> None:
        """Set fields by name (an unknown name raises: the status has one shape)."""
        unknown = set(values) - _NAMES
        if unknown:
            raise AttributeError(f"SyncStatus has no field {sorted(unknown)}")
        with self._lock:
            for name, value in values.items():
                setattr(self._status, name, value)

    def add_sent(self, n_bytes: int) -> None:
        with self._lock:
            self._status.sent_bytes += n_bytes

    def clear_alarm(self, kind: str) -> bool:
        """Clear the alarm if it is of ``kind``; True when it was."""
        with self._lock:
            if self._status.alarm is not None and self._status.alarm["kind"] == kind:
                self._status.alarm = None
                return True
            return False

    def backlog_and_receipt(self) -> tuple[int, int, int | None]:
        """(entries, bytes, seq of the last receipt): what the heartbeat reports of sync."""
        with self._lock:
            last = self._status.last_receipt
            return self._status.backlog_entries, self._status.backlog_bytes, None if last is None else last["seq"]

    def snapshot(self, mono_ns: int, utc_ns: int, hq_url: str) -> dict[str, Any]:
        """The status as the console and the health report show it."""
        with self._lock:
            st = self._status
            retry, progress = st.next_retry_mono_ns, st.last_progress_mono_ns
            out: dict[str, Any] = {
                "state": st.phase.value, "connected": st.connected,
                "backlog": {"entries": st.backlog_entries, "bytes": st.backlog_bytes},
                "current": _copy(st.current), "last_receipt": _copy(st.last_receipt),
                "last_error": _copy(st.last_error), "alarm": _copy(st.alarm),
                "last_heartbeat_utc_ns": st.last_heartbeat_utc_ns, "hq_clock_offset_ms": st.hq_clock_offset_ms,
                "sent_bytes": st.sent_bytes, "tlog": _copy(st.tlog), "tlog_fork": st.tlog_fork,
                # Entries set aside after failing on their own, with the seconds until each is tried again.
                "deferred": {seq: round(max(0, at - mono_ns) / NS_PER_S, 3) for seq, at in st.deferred.items()},
            }
        out["next_retry_utc_ns"] = None if retry is None else utc_ns + retry - mono_ns
        out["next_retry_in_s"] = None if retry is None else max(0.0, (retry - mono_ns) / NS_PER_S)
        # How long the backlog has waited without a byte confirmed: what "silently stalled" looks like.
        out["stalled_s"] = round((mono_ns - progress) / NS_PER_S, 3) if out["backlog"]["entries"] else 0.0
        out["hq_url"] = hq_url
        return out


def _copy(value: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if value is None else dict(value)
