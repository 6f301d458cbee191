"""``sync-state.json``: the tus upload URL of each entry being uploaded, kept across restarts.

Headquarters' offset (HEAD) is the truth about how far an upload got; this file only remembers
where each upload lives, the file hash sent at creation and the chunk size in use, so a restart
or a power cut resumes an upload instead of starting another. Losing the file costs little:
creating an upload for the same (device, seq, sha256) again returns the existing one.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from agent import fsutil

log = logging.getLogger(__name__)

FILE_NAME = "sync-state.json"
VERSION = 1


@dataclass(frozen=True, slots=True)
class UploadRecord:
    url: str
    file_sha256: str
    length: int
    chunk_bytes: int
    created_utc_ns: int


class UploadState:
    """The sidecar's content in memory, written through atomically on every change.

    Owned by the sync worker's thread; not thread-safe. A missing, unreadable or malformed file
    is logged and treated as empty (see the module docstring for why that is safe).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._uploads: dict[int, UploadRecord] = self._load()

    def _load(self) -> dict[int, UploadRecord]:
        try:
            doc = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            log.error("ignoring %s: %s (uploads in progress will be recreated)", self.path, e)
            return {}
        try:
            if doc["version"] != VERSION:
                raise ValueError(f"version {doc['version']!r}")
            return {int(seq): UploadRecord(**rec) for seq, rec in doc["uploads"].items()}
        except (KeyError, TypeError, ValueError) as e:
            log.error("ignoring %s: malformed (%s); uploads in progress will be recreated", self.path, e)
            return {}

    def get(self, seq: int) -> UploadRecord | None:
        return self._uploads.get(seq)

    def put(self, seq: int, record: UploadRecord) -> None:
        self._uploads[seq] = record
        self._save()

    def drop(self, seq: int) -> None:
        if self._uploads.pop(seq, None) is not None:
            self._save()

    def seqs(self) -> list[int]:
        return sorted(self._uploads)

    def _save(self) -> None:
        doc = {"version": VERSION, "uploads": {str(s): asdict(r) for s, r in sorted(self._uploads.items())}}
        fsutil.atomic_write_bytes(self.path, json.dumps(doc, sort_keys=True, indent=1).encode(), 0o600)
