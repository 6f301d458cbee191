"""The request polls a node holds open (``GET /v1/requests?wait_s=N``), woken when a request for
their unit is due: at once when it was queued through this node, otherwise on the node's next
look at the index (every ``look_every_s``, one query for all the polls it holds).

So the worst-case delay of a request to a unit whose poll is open is ``look_every_s`` plus the
round trip; the unit opens its next poll as soon as one is answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool

log = logging.getLogger(__name__)

MAX_WAIT_S = 25.0  # under the idle timeouts of carrier NATs and proxies (30 s and up)
LOOK_EVERY_S = 1.0


class PollError(ValueError):
    """A poll's query that is not ``wait_s=N`` with N from 0 to MAX_WAIT_S."""


def parse_wait(query: str) -> float:
    """The seconds a poll may be held, from its query (``wait_s=N``; none: answer at once)."""
    fields = parse_qsl(query, keep_blank_values=True, strict_parsing=False)
    if any(name != "wait_s" for name, _ in fields) or len(fields) > 1:
        raise PollError("a poll's query is only wait_s=N")
    if not fields:
        return 0.0
    text = fields[0][1]
    if not text.isdigit() or int(text) > MAX_WAIT_S:
        raise PollError(f"wait_s is a whole number of seconds from 0 to {MAX_WAIT_S:g}")
    return float(text)


class PollWaiters:
    """Open polls by unit, on one event loop. ``wait`` runs on the loop; ``notify`` and ``close``
    may come from any thread. ``due_among(device_ids)`` (blocking, run in a worker thread) says
    which units have something to take."""

    def __init__(self, due_among: Callable[[list[str]], set[str]], look_every_s: float = LOOK_EVERY_S) -> None:
        self._due_among = due_among
        self._look_every_s = look_every_s
        self._waiting: dict[str, set[asyncio.Event]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._looker: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def open_polls(self) -> int:
        return sum(len(events) for events in self._waiting.values())

    async def wait(self, device_id: str, timeout_s: float) -> None:
        """Until a request for ``device_id`` may be due, ``timeout_s`` passed, or the node closes."""
        if self._closed or timeout_s <= 0:
            return
        self._loop = asyncio.get_running_loop()
        event = asyncio.Event()
        self._waiting.setdefault(device_id, set()).add(event)
        if self._looker is None or self._looker.done():
            self._looker = self._loop.create_task(self._look())
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout_s)
        finally:
            events = self._waiting.get(device_id)
            if events is not None:
                events.discard(event)
                if not events:
                    del self._waiting[device_id]

    def notify(self, device_id: str) -> None:
        """A request for ``device_id`` was queued here: wake its polls (any thread)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop stopped meanwhile
                loop.call_soon_threadsafe(self._wake, device_id)

    def close(self) -> None:
        """The node is stopping: every open poll answers now, new ones at once (any thread)."""
        self._closed = True
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._wake_all)

    def _wake(self, device_id: str) -> None:
        for event in self._waiting.get(device_id, ()):
            event.set()

    def _wake_all(self) -> None:
        for device_id in list(self._waiting):
            self._wake(device_id)

    async def _look(self) -> None:
        """While polls are open: every ``look_every_s``, one query for which of their units
        have something due (queued through another node or process), and wake those."""
        while self._waiting and not self._closed:
            await asyncio.sleep(self._look_every_s)
            waiting = sorted(self._waiting)
            if not waiting:
                break
            try:
                due = await run_in_threadpool(self._due_among, waiting)
            except Exception:
                log.exception("looking for requests to deliver failed; trying again in %g s", self._look_every_s)
                continue
            for device_id in due:
                self._wake(device_id)
