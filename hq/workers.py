"""Several server processes on one listening socket: ``bodycam-hq serve --workers N``.

The parent binds the socket, holds the data dir's serve lock, forks N workers before it starts
any thread (each worker opens its own index connection and runs its own ingest pool and event
loop on the inherited socket; the kernel spreads connections over them), writes the
``service-start``/``service-stop`` audit records, serves the metrics of all workers and forwards
SIGTERM: each worker stops accepting and drains its requests. A worker that dies takes the
others down (systemd restarts the whole service), so a node is never left half-served.

Prometheus counters of several processes are summed by prometheus-client's multiprocess mode,
from a private directory the parent creates (0700) and removes (``PROMETHEUS_MULTIPROC_DIR``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class WorkerError(Exception):
    """A worker could not be started."""


class Workers:
    """N forked children running ``body(index)``; their exit codes are their ``body``'s result."""

    def __init__(self, count: int, body: Callable[[int], int]) -> None:
        if count < 1:
            raise WorkerError("--workers must be at least 1")
        self.count = count
        self._body = body
        self.pids: dict[int, int] = {}  # pid -> worker index
        self.exits: dict[int, int] = {}  # worker index -> exit status, once reaped

    def start(self) -> None:
        for i in range(self.count):
            pid = os.fork()
            if pid == 0:  # the worker: never returns into the parent's code
                code = 70
                try:
                    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent forwards what matters
                    code = self._body(i)
                except BaseException:  # noqa: BLE001 - a worker reports and exits, whatever happened
                    log.exception("worker %d failed", i)
                finally:
                    logging.shutdown()
                    os._exit(code)
            self.pids[pid] = i

    def reap(self) -> list[int]:
        """Collect workers that exited (without waiting); the indexes of those that did."""
        gone = []
        for pid in list(self.pids):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                index = self.pids.pop(pid)
                self.exits[index] = os.waitstatus_to_exitcode(status)
                gone.append(index)
        return gone

    def stop(self, timeout_s: float) -> bool:
        """SIGTERM every worker, wait up to ``timeout_s`` for all; True if none had to be killed."""
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while self.pids and time.monotonic() < deadline:
            self.reap()
            time.sleep(0.05)
        clean = not self.pids
        for index, code in sorted(self.exits.items()):
            if code != 0:
                log.error("worker %d ended with exit status %d", index, code)
        for pid in list(self.pids):
            log.error("worker %d did not stop within %.0f s: killed", self.pids[pid], timeout_s)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            self.exits[self.pids.pop(pid)] = -signal.SIGKILL
        return clean and all(code == 0 for code in self.exits.values())


class MetricsDir:
    """The private directory of prometheus-client's multiprocess mode, for the life of a serve."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="bodycam-hq-metrics-"))
        os.environ[MULTIPROC_ENV] = str(self.path)

    def close(self) -> None:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(self.path, ignore_errors=True)
