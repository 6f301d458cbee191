"""Court exports started from the operations room, as a bounded job queue off the request path.

At most ``workers`` exports run at once and at most ``queue_max`` wait; a request beyond that is
refused at once (``ExportJobError``), never left hanging. Each job's state is a JSON file in
``exports/jobs/`` beside the export folders it makes, so it outlives the request and the page:
after a restart, a job that was queued or running is shown as interrupted (start it again), not
silently lost. A finished job's result is its export folder and a ``.zip`` of it, which only the
user who asked for it may download (the pages check that; hq/web/lifecycle_pages.py).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

log = logging.getLogger(__name__)

STATES = ("queued", "running", "done", "failed")
_JOB_ID = re.compile(r"^[0-9a-f]{32}$")


class ExportJobError(Exception):
    """A job that cannot be queued (the queue is full) or found; the message says what to do."""


@dataclass(frozen=True, slots=True)
class ExportJob:
    job_id: str
    case_id: str
    requested_by: str
    requested_utc_ns: int
    state: str = "queued"
    started_utc_ns: int | None = None
    finished_utc_ns: int | None = None
    folder: str | None = None  # the export folder's name in the exports folder, once done
    archive: str | None = None  # its zip's name
    error: str | None = None
    recordings: int = 0
    viewing_copies: int = 0


@dataclass(frozen=True, slots=True)
class ExportOutcome:
    folder: str
    archive: str
    recordings: int
    viewing_copies: int


Run = Callable[[ExportJob], ExportOutcome]  # raises with a message a supervisor can act on


class ExportJobs:
    """The queue and its workers. ``run`` makes one export (called on a worker thread; any
    exception fails the job with its message). ``on_finish`` is told of each finished job (the
    audit record). Thread-safe: pages submit and read while workers update."""

    def __init__(self, folder: Path, run: Run, now_ns: Callable[[], int], *, workers: int = 1, queue_max: int = 8,
                 on_finish: Callable[[ExportJob], None] | None = None) -> None:
        if workers < 1 or queue_max < 1:
            raise ValueError("workers and queue_max must be at least 1")
        self.folder = folder
        self.workers = workers
        self.queue_max = queue_max
        self._run = run
        self._now_ns = now_ns
        self._on_finish = on_finish
        self._lock = threading.Lock()
        self._jobs: dict[str, ExportJob] = {}
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._load()

    def _load(self) -> None:
        """Jobs of earlier runs; those cut short by a stop are marked interrupted."""
        if not self.folder.is_dir():
            return
        for path in sorted(self.folder.glob("*.json")):
            try:
                job = ExportJob(**json.loads(path.read_text()))
            except (OSError, ValueError, TypeError) as exc:
                log.warning("export job %s is unreadable (%s); ignored", path.name, exc)
                continue
            if job.state in ("queued", "running"):
                job = replace(job, state="failed", finished_utc_ns=self._now_ns(),
                              error="interrupted: headquarters stopped before it finished; start the export again")
                self._save(job)
            self._jobs[job.job_id] = job

    def _save(self, job: ExportJob) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{job.job_id}.tmp"
        tmp.write_text(json.dumps(asdict(job), sort_keys=True))
        os.replace(tmp, self.folder / f"{job.job_id}.json")

    def _set(self, job: ExportJob) -> None:
        with self._lock:
            self._jobs[job.job_id] = job
            self._save(job)

    def submit(self, case_id: str, requested_by: str) -> ExportJob:
        """Queue an export of ``case_id`` for ``requested_by``; ExportJobError when the queue is full."""
        with self._lock:
            waiting = sum(1 for j in self._jobs.values() if j.state == "queued")
            if waiting >= self.queue_max:
                raise ExportJobError(f"{waiting} exports are already waiting (at most {self.queue_max}); "
                                     "try again when one has finished")
            job = ExportJob(uuid.uuid4().hex, case_id, requested_by, self._now_ns())
            self._jobs[job.job_id] = job
            self._save(job)
            if len(self._threads) < self.workers:
                t = threading.Thread(target=self._work, name=f"hq-export-{len(self._threads)}", daemon=True)
                self._threads.append(t)
                t.start()
        self._queue.put(job.job_id)
        return job

    def get(self, job_id: str) -> ExportJob | None:
        if not _JOB_ID.match(job_id):
            return None
        with self._lock:
            return self._jobs.get(job_id)

    def jobs(self, requested_by: str | None = None) -> list[ExportJob]:
        """Newest first; only ``requested_by``'s when given."""
        with self._lock:
            found = [j for j in self._jobs.values() if requested_by is None or j.requested_by == requested_by]
        return sorted(found, key=lambda j: j.requested_utc_ns, reverse=True)

    def running(self) -> int:
        with self._lock:
            return sum(1 for j in self._jobs.values() if j.state == "running")

    def _work(self) -> None:
        while (job_id := self._queue.get()) is not None and not self._stop.is_set():
            job = self.get(job_id)
            if job is None or job.state != "queued":
                continue
            job = replace(job, state="running", started_utc_ns=self._now_ns())
            self._set(job)
            try:
                outcome = self._run(job)
            except Exception as exc:  # noqa: BLE001 - a job fails with its reason; the worker goes on
                log.warning("export job %s (case %s) failed: %s", job.job_id, job.case_id, exc)
                job = replace(job, state="failed", finished_utc_ns=self._now_ns(), error=str(exc)[:500])
            else:
                job = replace(job, state="done", finished_utc_ns=self._now_ns(), folder=outcome.folder,
                              archive=outcome.archive, recordings=outcome.recordings,
                              viewing_copies=outcome.viewing_copies)
            self._set(job)
            if self._on_finish is not None:
                try:
                    self._on_finish(job)
                except Exception:  # noqa: BLE001 - the audit write failing must not stop the worker
                    log.exception("recording the end of export job %s", job.job_id)

    def close(self) -> None:
        """Let the running exports finish; queued ones stay queued (shown interrupted next start)."""
        self._stop.set()
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join(timeout=60)
