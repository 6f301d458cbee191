"""Audit records of refused, unauthenticated requests, aggregated so that no stream of them can grow
the index without bound (security review, findings 1 and 7).

Within each window (60 s) the first refusal of a (source, reason) is written at once, with count 1;
the ones after it are only counted, and written as one record with their count when the window
ends. At most ``max_records`` records are written per window; past that, every further refusal is
counted into one ``overflow`` record. The actor is always ``unauthenticated``: a key id the request
claims is recorded as ``claimed_key_id`` (escaped, truncated), never as the actor; the target is
the request path only (never the query), escaped and truncated.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.textsafe import safe_text
from hq.audit import Auditor

ACTOR = "unauthenticated"
EVENT = "auth"
WINDOW_S = 60
MAX_RECORDS_PER_WINDOW = 100
MAX_PATH_CHARS = 200
MAX_KEY_ID_CHARS = 64
OVERFLOW = ("*", "overflow")


def clip(text: str, limit: int) -> str:
    """``text`` escaped for a log (one line) and cut to ``limit`` characters, marked if cut."""
    safe = safe_text(text)
    return safe if len(safe) <= limit else safe[: limit - 3] + "..."


@dataclass
class _Pending:
    count: int = 0
    target: str = ""
    claimed: set[str] = field(default_factory=set)


class RefusalLog:
    """Writes refusal records through ``auditor``; thread-safe."""

    def __init__(
        self,
        auditor: Auditor,
        now_ns: Callable[[], int],
        window_s: int = WINDOW_S,
        max_records: int = MAX_RECORDS_PER_WINDOW,
    ) -> None:
        self._auditor = auditor
        self._now_ns = now_ns
        self._window_ns = window_s * 1_000_000_000
        self._window_s = window_s
        self._max_records = max_records
        self._lock = threading.Lock()
        self._window_start = now_ns()
        self._written: set[tuple[str, str]] = set()
        self._pending: dict[tuple[str, str], _Pending] = {}
        self.observer: Callable[[str], None] | None = None  # counts each refusal by reason (metrics)

    def refused(self, source: str, reason: str, path: str, claimed_key_id: str | None = None) -> None:
        """Note one refused request from ``source`` for ``reason`` (a short stable code)."""
        target = clip(path.split("?", 1)[0], MAX_PATH_CHARS)
        claimed = clip(claimed_key_id, MAX_KEY_ID_CHARS) if claimed_key_id else None
        key = (clip(source, 64), clip(reason, 64))
        if self.observer is not None:
            self.observer(key[1])
        with self._lock:
            self._roll()
            if key not in self._written and len(self._written) < self._max_records:
                self._written.add(key)
                self._write(key, target, 1, {claimed} if claimed else set())
                return
            if key not in self._pending and len(self._pending) >= self._max_records:
                key = OVERFLOW
            pending = self._pending.setdefault(key, _Pending(target=target))
            pending.count += 1
            if claimed and len(pending.claimed) < 4:
                pending.claimed.add(claimed)

    def flush(self) -> None:
        """Write the counts held for the current window now (at shutdown, say) and start a new one."""
        with self._lock:
            self._flush()

    def flush_due(self) -> None:
        """Write the held counts if their window has ended (called periodically)."""
        with self._lock:
            self._roll()

    def _roll(self) -> None:
        if self._now_ns() - self._window_start >= self._window_ns:
            self._flush()

    def _flush(self) -> None:
        pending, self._pending = self._pending, {}
        self._written = set()
        self._window_start = self._now_ns()
        for key, p in sorted(pending.items()):
            self._write(key, p.target, p.count, p.claimed, aggregated=True)

    def _write(
        self, key: tuple[str, str], target: str, count: int, claimed: set[str], aggregated: bool = False
    ) -> None:
        source, reason = key
        detail: dict[str, object] = {"reason": reason, "peer": source, "count": count}
        if aggregated:
            detail["window_s"] = self._window_s
        if claimed:
            detail["claimed_key_id"] = sorted(claimed)[0] if len(claimed) == 1 else sorted(claimed)
        self._auditor.record(EVENT, ACTOR, target, "refused", **detail)
