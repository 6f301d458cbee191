"""Live updates for the operations room: heartbeats and alert changes, published as they are
ingested and fanned out to every open stream, across workers and nodes.

``LocalBus`` is the embedded default: one process, subscribers in memory. ``PgBus`` is the fleet's:
``publish`` is PostgreSQL's ``NOTIFY`` on one channel, and each process runs one listener thread
(its own psycopg connection, ``LISTEN``) that fans what arrives out to its local subscribers, so a
heartbeat ingested by any worker of any node reaches every browser. Each subscription holds at
most ``max_queue`` events; a subscriber that falls behind is dropped (``overflowed``: its stream
ends and the browser reconnects to a fresh snapshot) instead of holding memory for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import threading
from collections import deque
from collections.abc import Mapping
from typing import Any, Protocol

log = logging.getLogger(__name__)

CHANNEL = "bodycam_ops"
MAX_QUEUE = 256
# NOTIFY payloads must stay under 8000 bytes; an event bigger than this is sent as a resync.
MAX_PAYLOAD_BYTES = 7000
OUTBOX_MAX = 10_000  # events waiting to be sent by one process
SEND_BATCH = 200  # NOTIFYs sent in one pipelined round trip


class EventsError(RuntimeError):
    """The event bus could not be started or used."""


class Subscription:
    """One stream's bounded queue. Thread contract: ``offer`` from any thread; ``get`` from the
    event loop the subscription was made on."""

    def __init__(self, loop: asyncio.AbstractEventLoop, max_queue: int = MAX_QUEUE) -> None:
        self._loop = loop
        self._max = max_queue
        self._lock = threading.Lock()
        self._queue: deque[dict[str, Any]] = deque()
        self._wake = asyncio.Event()
        self.overflowed = False
        self.closed = False

    def offer(self, event: dict[str, Any]) -> None:
        with self._lock:
            if self.closed or self.overflowed:
                return
            if len(self._queue) >= self._max:
                self.overflowed = True
                self._queue.clear()
            else:
                self._queue.append(event)
        try:
            self._loop.call_soon_threadsafe(self._wake.set)
        except RuntimeError:  # the loop is closed: the stream is gone
            self.closed = True

    async def get(self, timeout_s: float) -> list[dict[str, Any]]:
        """The events waiting (possibly none after ``timeout_s``); check ``overflowed`` after."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout_s)
        self._wake.clear()
        with self._lock:
            out = list(self._queue)
            self._queue.clear()
        return out

    def close(self) -> None:
        with self._lock:
            self.closed = True
            self._queue.clear()


class EventBus(Protocol):
    def publish(self, event: Mapping[str, Any]) -> None: ...
    def subscribe(self, loop: asyncio.AbstractEventLoop, max_queue: int = MAX_QUEUE) -> Subscription: ...
    def unsubscribe(self, sub: Subscription) -> None: ...
    def subscribers(self) -> int: ...
    def close(self) -> None: ...


class LocalBus:
    """Subscribers of this process. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: set[Subscription] = set()

    def publish(self, event: Mapping[str, Any]) -> None:
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            sub.offer(dict(event))

    def subscribe(self, loop: asyncio.AbstractEventLoop, max_queue: int = MAX_QUEUE) -> Subscription:
        sub = Subscription(loop, max_queue)
        with self._lock:
            self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        sub.close()
        with self._lock:
            self._subs.discard(sub)

    def subscribers(self) -> int:
        with self._lock:
            return len(self._subs)

    def close(self) -> None:
        with self._lock:
            subs, self._subs = list(self._subs), set()
        for sub in subs:
            sub.close()


def encode(event: Mapping[str, Any]) -> str:
    """The NOTIFY payload of ``event``: compact JSON, or a resync notice when too big."""
    text = json.dumps(dict(event), separators=(",", ":"), sort_keys=True, default=str)
    if len(text.encode()) > MAX_PAYLOAD_BYTES:
        return json.dumps({"type": "resync", "reason": "event too big for NOTIFY"})
    return text


class PgBus:
    """PostgreSQL LISTEN/NOTIFY. ``conninfo``: a libpq URL (password from ~/.pgpass or PGPASSFILE,
    never logged). Thread contract: ``publish`` from any thread only queues the event (at most
    OUTBOX_MAX; past that events are dropped and streams told to resync), so a heartbeat never
    waits on a NOTIFY; the sender thread sends what waits in batches on its own connection; the
    listener thread owns another, reconnects with backoff when it drops, and tells subscribers to
    resync when it does (they may have missed events)."""

    def __init__(self, conninfo: str, *, poll_s: float = 1.0) -> None:
        try:
            import psycopg  # the fleet extra; imported only for a PostgreSQL index
        except ImportError as exc:
            raise EventsError("live updates over PostgreSQL need psycopg: pip install 'bodycam[fleet]'") from exc
        self._psycopg = psycopg
        self._conninfo = conninfo
        self._poll_s = poll_s
        self._local = LocalBus()
        self._outbox: queue.Queue[str] = queue.Queue(OUTBOX_MAX)
        self._dropped = threading.Event()
        self._stop = threading.Event()
        self._listening = threading.Event()
        self._threads = [threading.Thread(target=self._listen, name="hq-events-listen", daemon=True),
                         threading.Thread(target=self._send, name="hq-events-send", daemon=True)]
        for thread in self._threads:
            thread.start()

    def wait_listening(self, timeout_s: float) -> bool:
        return self._listening.wait(timeout_s)

    def publish(self, event: Mapping[str, Any]) -> None:
        if self._stop.is_set():
            return
        try:
            self._outbox.put_nowait(encode(event))
        except queue.Full:
            self._dropped.set()

    def _send(self) -> None:
        conn: Any = None
        while not self._stop.is_set():
            try:
                batch = [self._outbox.get(timeout=self._poll_s)]
            except queue.Empty:
                continue
            while len(batch) < SEND_BATCH:
                try:
                    batch.append(self._outbox.get_nowait())
                except queue.Empty:
                    break
            if self._dropped.is_set():
                self._dropped.clear()
                batch.append(json.dumps({"type": "resync", "reason": "live updates were dropped"}))
            try:
                if conn is None or conn.closed:
                    conn = self._psycopg.connect(self._conninfo, autocommit=True)
                with conn.cursor() as cur:
                    cur.executemany("SELECT pg_notify(%s, %s)", [(CHANNEL, p) for p in batch])
            except self._psycopg.Error as exc:
                conn = None
                self._dropped.set()
                log.warning("publishing %d live update(s) failed: %s", len(batch), " ".join(str(exc).split()))
                self._stop.wait(1.0)
        if conn is not None:
            conn.close()

    def subscribe(self, loop: asyncio.AbstractEventLoop, max_queue: int = MAX_QUEUE) -> Subscription:
        return self._local.subscribe(loop, max_queue)

    def unsubscribe(self, sub: Subscription) -> None:
        self._local.unsubscribe(sub)

    def subscribers(self) -> int:
        return self._local.subscribers()

    def _listen(self) -> None:
        backoff_s = 0.5
        first = True
        while not self._stop.is_set():
            try:
                with self._psycopg.connect(self._conninfo, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._listening.set()
                    if not first:
                        self._local.publish({"type": "resync", "reason": "live updates reconnected"})
                    first, backoff_s = False, 0.5
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=self._poll_s):
                            self._deliver(note.payload)
            except self._psycopg.Error as exc:
                self._listening.clear()
                log.warning("live updates: listening failed (%s); retrying in %.1f s",
                            " ".join(str(exc).split()), backoff_s)
                self._stop.wait(backoff_s)
                backoff_s = min(backoff_s * 2, 30.0)

    def _deliver(self, payload: str) -> None:
        try:
            event = json.loads(payload)
        except ValueError:
            return
        if isinstance(event, dict):
            self._local.publish(event)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self._poll_s + 5)
        self._local.close()


def bus_for(engine_url: Any) -> EventBus:
    """The bus for an index's SQLAlchemy URL: NOTIFY on PostgreSQL, in-process on SQLite."""
    if engine_url.get_backend_name() == "postgresql":
        return PgBus(engine_url.set(drivername="postgresql").render_as_string(hide_password=False))
    return LocalBus()
