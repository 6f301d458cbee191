"""Headquarters' data dir and the wiring of a service from it.

Layout of ``--data-dir H``: ``index.sqlite`` (the index and audit log, unless ``--database-url``
names another database; ``index.sqlite-locks/`` its per-device locks), ``evidence/<device>/``,
``quarantine/<device>/``, ``uploads/`` (tus uploads in progress) and, by default, ``keys/``
(``receipt.key``, ``server.key``, ``server.pem``; ``hq.key`` need not be here). The transparency
log lives in the index's database (hq/tlog.py) and signs its checkpoints with ``receipt.key``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from agent.evidence.keys import load_receipt_private
from hq.audit import Auditor
from hq.index import SqlIndex
from hq.index import open_index as _open_index
from hq.ingest_pool import IngestSettings
from hq.lifecycle_index import SqlLifecycle
from hq.lifecycle_service import LifecycleService
from hq.service import HqService
from hq.storage import EvidenceStore
from hq.storeurl import open_stores
from hq.tlog import SqlLog, default_origin
from hq.witness_client import WitnessPolicy

log = logging.getLogger(__name__)


def prepare(data_dir: Path) -> None:
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)


def open_index(data_dir: Path, database_url: str | None = None) -> SqlIndex:
    """``data_dir``'s SQLite index, or the database ``database_url`` names (already migrated)."""
    prepare(data_dir)
    return _open_index(data_dir, database_url)


MAINTAIN_INTERVAL_S = 60.0


def lifecycle_service(index: SqlIndex, store: EvidenceStore, now_ns: Callable[[], int] = time.time_ns,
                      component: str = "hq-lifecycle", exports_dir: Path | None = None,
                      keys_dir: Path | None = None) -> LifecycleService:
    """The evidence lifecycle over ``index``'s database and ``store`` (hq/lifecycle_service.py);
    ``exports_dir``: where the operations room writes court exports, signed with the export key in
    ``keys_dir``."""
    return LifecycleService(SqlLifecycle(index), store, Auditor(index, component, now_ns), now_ns, component,
                            exports_dir=exports_dir, keys_dir=keys_dir)


def build_service(
    data_dir: Path,
    keys_dir: Path,
    index: SqlIndex,
    now_ns: Callable[[], int] = time.time_ns,
    ingest: IngestSettings | None = None,
    sole_node: bool = True,
    store_url: str | None = None,
    log_origin: str | None = None,
    witnesses: WitnessPolicy | None = None,
) -> HqService:
    """A service over ``data_dir`` (and the object store of ``store_url``, if given: hq/storeurl.py);
    uploads interrupted by a restart resume where their bytes end, and completed uploads not yet
    ingested are queued again. ``sole_node``: this process is the only one over the index (it holds
    the data dir's lock), so every claim left in it is stale; a worker of ``serve --workers N`` is
    not, and takes over only claims older than the lease."""
    store, uploads = open_stores(data_dir, store_url, now_ns)
    receipt_key = load_receipt_private(keys_dir / "receipt.key")
    tlog = SqlLog(index.engine, log_origin or default_origin(receipt_key.public_key()), receipt_key)
    service = HqService(
        index=index,
        store=store,
        uploads=uploads,
        receipt_key=receipt_key,
        now_ns=now_ns,
        ingest=ingest,
        tlog=tlog,
        witnesses=witnesses,
        lifecycle=lifecycle_service(index, store, now_ns, exports_dir=data_dir / "exports", keys_dir=keys_dir),
    )
    pending = index.uploads("receiving")
    if pending:
        log.info("%d upload(s) in progress resume from their size on disk", len(pending))
    queued = service.resume_ingest(sole_node=sole_node)
    if queued:
        log.info("%d completed upload(s) queued for ingest again", queued)
    return service


class Periodic:
    """``work`` on its own thread every ``interval_s`` (Frigate's maintainer loop): each pass
    catches, logs with ``what`` and goes on; ``stop`` ends the loop at once."""

    def __init__(self, work: Callable[[], object], interval_s: float, name: str, what: str) -> None:
        self._work = work
        self._interval_s = interval_s
        self._what = what
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self._interval_s)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self._work()
            except Exception:
                log.exception("%s failed; trying again in %.0f s", self._what, self._interval_s)


class Maintenance(Periodic):
    """The service's periodic pass: queue completed uploads left behind (a full queue, a failed
    try, a node that stopped mid-ingest), expire abandoned ones, apply retention."""

    def __init__(self, service: HqService, interval_s: float = MAINTAIN_INTERVAL_S) -> None:
        super().__init__(service.maintain, interval_s, "hq-maintain", "maintenance pass")
