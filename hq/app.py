"""Headquarters' data dir and the wiring of a service from it.

Layout of ``--data-dir H``: ``index.sqlite`` (the index and audit log, unless ``--database-url``
names another database; ``index.sqlite-locks/`` its per-device locks), ``evidence/<device>/``,
``quarantine/<device>/``, ``uploads/`` (tus uploads in progress) and, by default, ``keys/``
(``receipt.key``, ``server.key``, ``server.pem``; ``hq.key`` need not be here).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from agent.evidence.keys import load_receipt_private
from hq.index import SqlIndex
from hq.index import open_index as _open_index
from hq.service import HqService
from hq.storage import FileEvidenceStore, UploadArea

log = logging.getLogger(__name__)


def prepare(data_dir: Path) -> None:
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)


def open_index(data_dir: Path, database_url: str | None = None) -> SqlIndex:
    """``data_dir``'s SQLite index, or the database ``database_url`` names (already migrated)."""
    prepare(data_dir)
    return _open_index(data_dir, database_url)


def build_service(
    data_dir: Path, keys_dir: Path, index: SqlIndex, now_ns: Callable[[], int] = time.time_ns
) -> HqService:
    """A service over ``data_dir``; uploads interrupted by a restart resume where their files end."""
    service = HqService(
        index=index,
        store=FileEvidenceStore(data_dir),
        uploads=UploadArea(data_dir),
        receipt_key=load_receipt_private(keys_dir / "receipt.key"),
        now_ns=now_ns,
    )
    pending = index.uploads("receiving")
    if pending:
        log.info("%d upload(s) in progress resume from their size on disk", len(pending))
    return service
