"""Ingest off the request path: a bounded pool of worker threads, and the job each runs (claim a
completed upload in the index, ingest it, record its final answer).

The completing PATCH submits its upload and waits for the answer within a deadline; a full queue
refuses the submission (the upload stays ``complete`` in the index and is picked up later), so
nothing held in memory here is needed to lose nothing: the index says what is left to ingest.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Any

from agent.evidence.receipt import encode_receipt_header
from hq.index import Index
from hq.ingest import IngestError, Ingestor, Outcome
from hq.records import Upload

log = logging.getLogger(__name__)

NS_PER_S = 1_000_000_000


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True, slots=True)
class IngestSettings:
    """How ingest runs. ``workers``: threads verifying and storing (default min(4, CPUs));
    ``queue_max``: completed uploads waiting for a worker before a completing PATCH is answered
    503; ``wait_s``: how long a completing PATCH waits for its receipt before answering that
    ingest is in progress (0: never waits); ``claim_lease_s``: an upload claimed by a worker
    longer ago than this is taken over (its node stopped mid-ingest)."""

    workers: int = default_workers()
    queue_max: int = 64
    wait_s: float = 20.0
    claim_lease_s: float = 600.0


class IngestBusy(Exception):
    """The ingest queue is full: the upload stays complete and is ingested later."""


Job = Callable[[Upload], Upload | None]


class IngestPool:
    """A bounded queue of completed uploads and the worker threads that run ``job`` on them.

    Thread contract: ``submit``, ``pending`` and ``depth`` from any thread. One upload is queued
    at most once: submitting it again while queued or running returns the same future. Workers
    are daemon threads started on the first submission; ``close`` lets the running jobs finish.
    ``job`` must not raise (it is given the upload, returns it finished or None); if it does, the
    future carries the exception and the worker goes on.
    """

    def __init__(self, job: Job, workers: int, queue_max: int, name: str = "hq-ingest") -> None:
        if workers < 1 or queue_max < 1:
            raise ValueError("an ingest pool needs at least one worker and one queue slot")
        self._job = job
        self._workers = workers
        self._name = name
        self._queue: queue.Queue[tuple[Upload, Future[Upload | None]] | None] = queue.Queue(queue_max)
        self._futures: dict[str, Future[Upload | None]] = {}
        self._guard = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._closed = False

    def submit(self, upload: Upload) -> Future[Upload | None]:
        """Queue ``upload`` for ingest; raises :class:`IngestBusy` when the queue is full."""
        with self._guard:
            if self._closed:
                raise IngestBusy("the service is stopping")
            running = self._futures.get(upload.upload_id)
            if running is not None:
                return running
            future: Future[Upload | None] = Future()
            try:
                self._queue.put_nowait((upload, future))
            except queue.Full:
                raise IngestBusy(f"{self._queue.maxsize} completed uploads are waiting for ingest") from None
            self._futures[upload.upload_id] = future
            if not self._threads:
                self._start()
            return future

    def pending(self, upload_id: str) -> Future[Upload | None] | None:
        """The future of an upload queued or running in this process, if any."""
        with self._guard:
            return self._futures.get(upload_id)

    def depth(self) -> int:
        """Uploads waiting for a worker (not counting those being ingested)."""
        return self._queue.qsize()

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop taking uploads; let the workers finish what they run. Queued uploads stay
        complete in the index (the next start picks them up)."""
        with self._guard:
            self._closed = True
            threads = list(self._threads)
        for _ in threads:
            self._queue.put(None)
        for t in threads:
            t.join(timeout_s)

    def _start(self) -> None:
        for i in range(self._workers):
            t = threading.Thread(target=self._work, name=f"{self._name}-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            upload, future = item
            if self._closed:  # left for the next start; the waiting request answers pending
                self._settle(upload, future, None)
                continue
            try:
                done = self._job(upload)
            except BaseException as exc:  # the job catches what it knows; keep the worker alive
                log.exception("ingest of upload %s failed", upload.upload_id)
                with self._guard:
                    self._futures.pop(upload.upload_id, None)
                future.set_exception(exc)
                continue
            self._settle(upload, future, done)

    def _settle(self, upload: Upload, future: Future[Upload | None], done: Upload | None) -> None:
        with self._guard:
            self._futures.pop(upload.upload_id, None)
        future.set_result(done)


def outcome_result(outcome: Outcome) -> dict[str, Any]:
    """What the index keeps as an upload's final answer (``Upload.result``)."""
    if outcome.receipt is not None:
        done: dict[str, Any] = {"receipt": encode_receipt_header(outcome.receipt), "code": outcome.code}
        if outcome.inclusion is not None:
            done["tlog"] = encode_receipt_header(outcome.inclusion)
        return done
    result: dict[str, Any] = {"error": {"code": outcome.code, "message": outcome.message}}
    if outcome.notice is not None:
        result["notice"] = encode_receipt_header(outcome.notice)
    return result


class IngestJobs:
    """The job of an ingest worker, and the pass that finds work left by a stop.

    An upload is claimed with one row update (``complete`` → ``ingesting``), so one worker on
    one node ingests it; the final state and answer are recorded after. Thread-safe: the index
    arbitrates every claim.
    """

    def __init__(self, index: Index, ingestor: Ingestor, now_ns: Callable[[], int], claim_lease_s: float) -> None:
        self._index = index
        self._ingestor = ingestor
        self._now_ns = now_ns
        self._lease_ns = int(claim_lease_s * NS_PER_S)
        # ingest_done(size_bytes, seconds, outcome): the metrics' hook (hq.metrics.Metrics.ingest_done)
        self.observer: Callable[[int, float, str], None] | None = None

    def _observe(self, upload: Upload, started_s: float, outcome: str) -> None:
        if self.observer is not None:
            self.observer(upload.length, time.monotonic() - started_s, outcome)

    def run(self, upload: Upload) -> Upload | None:
        """Claim and ingest ``upload``; its finished record, or None when another worker or node
        holds it or it could not be ingested now (it is then left to be taken again)."""
        uid = upload.upload_id
        if not self._index.move_upload(uid, "complete", "ingesting", self._now_ns()):
            return None
        started = time.monotonic()
        try:
            outcome = self._ingestor.ingest(upload)
        except IngestError as exc:
            log.error("ingest of upload %s: %s; the unit sends it again", uid, exc)
            self._index.move_upload(uid, "ingesting", "receiving", self._now_ns())
            self._observe(upload, started, "failed")
            return None
        except Exception:
            log.exception("ingest of upload %s failed; it is tried again later", uid)
            self._index.move_upload(uid, "ingesting", "complete", self._now_ns())
            self._observe(upload, started, "failed")
            return None
        result = outcome_result(outcome)
        state = "quarantined" if outcome.action == "quarantine" else "stored"
        self._observe(upload, started, "duplicate" if outcome.action == "duplicate" else state)
        self._index.finish_upload(uid, state, result, self._now_ns())
        return replace(upload, state=state, result=result)

    def leftover(self, sole_node: bool = False) -> list[Upload]:
        """Uploads waiting for ingest: every ``complete`` one, and ``ingesting`` ones whose claim
        is older than the lease (their node stopped), which are put back to ``complete`` here.
        ``sole_node``: this process is the only one over this index (the embedded service holds
        its data dir's lock) and starting, so every claim is stale."""
        now = self._now_ns()
        before = now + 1 if sole_node else now - self._lease_ns
        for stale in self._index.uploads("ingesting"):
            if stale.updated_utc_ns < before and self._index.move_upload(
                stale.upload_id, "ingesting", "complete", now, updated_before_ns=before
            ):
                log.warning("upload %s was claimed for ingest and never finished: taken over", stale.upload_id)
        return self._index.uploads("complete")


def resubmit(jobs: IngestJobs, pool: IngestPool, sole_node: bool = False) -> int:
    """Queue the uploads left complete (a restart, a full queue, a failed try) while there is
    room; return how many were queued. The rest wait for the next pass."""
    queued = 0
    for upload in jobs.leftover(sole_node):
        try:
            pool.submit(upload)
        except IngestBusy:
            break
        queued += 1
    return queued


__all__ = ["IngestBusy", "IngestJobs", "IngestPool", "IngestSettings", "default_workers", "outcome_result", "resubmit"]
