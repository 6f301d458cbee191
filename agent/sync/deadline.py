"""An overall deadline for one blocking network exchange: when it passes, a callback breaks the
exchange (shuts its socket down) from a timer thread."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import TracebackType

log = logging.getLogger(__name__)


class Deadline:
    """Calls ``expire`` once ``seconds`` have passed, unless the exchange ended first.

    Why: socket timeouts bound each read or write, not their sum, so a peer that trickles one
    byte at a time holds a blocked thread for as long as it likes. ``expire`` must make the
    blocked calls fail (``socket.shutdown`` does) and return quickly.

    Real time (``threading.Timer``), like the socket timeouts it completes: the network does not
    run on the injected clock. Thread contract: ``start``/``end`` (or ``with``) on the owning
    thread; ``expire`` runs on the timer thread, never after ``end`` has returned, and at most once.
    ``seconds`` must be positive.
    """

    def __init__(self, seconds: float, expire: Callable[[], None]) -> None:
        if not seconds > 0:
            raise ValueError(f"a deadline needs a positive number of seconds, got {seconds}")
        self.seconds = seconds
        self._expire = expire
        self._lock = threading.Lock()
        self._over = False
        self._expired = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.name = "deadline"

    @property
    def expired(self) -> bool:
        """True once the deadline passed before :meth:`end` (the exchange was broken)."""
        with self._lock:
            return self._expired

    def start(self) -> Deadline:
        self._timer.start()
        return self

    def end(self) -> None:
        """The exchange is over (idempotent): from now on the deadline does nothing."""
        with self._lock:
            self._over = True
        self._timer.cancel()

    def __enter__(self) -> Deadline:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.end()

    def _fire(self) -> None:
        with self._lock:
            if self._over:
                return
            self._expired = True
            try:
                self._expire()
            except Exception:  # the timer thread has no one to tell: log it
                log.exception("breaking an exchange at its %.1f s deadline failed", self.seconds)
