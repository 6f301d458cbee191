"""The upload in progress of one entry, and the one owner of every upload in progress.

An upload is known in three places, each the truth for one thing: headquarters' HEAD for how
many bytes it holds, the sidecar (:mod:`agent.sync.state`) for where the upload lives and what
was announced (URL, file hash, length, chunk size), the store for the entry's state and the
offset last confirmed (what the backlog and a resume check against). :class:`Uploads` is the
only code that reads or writes any of them for an upload; the worker holds an
:class:`UploadSession` while it sends.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from agent.store import Segment, Store
from agent.sync.client import HqClient
from agent.sync.errors import EntryFailed, ProtocolError
from agent.sync.receipts import Sent
from agent.sync.state import FILE_NAME, UploadRecord, UploadState
from hal.clock import Clock

log = logging.getLogger(__name__)


@dataclass(slots=True)
class UploadSession:
    """One entry's upload while the worker sends it: where it lives, what was announced, and
    headquarters' confirmed ``offset``. ``resumed``: it existed before this session (a restart,
    a preemption, a retry) rather than being created for it."""

    seg: Segment
    record: UploadRecord
    resumed: bool
    offset: int = 0

    @property
    def url(self) -> str:
        return self.record.url

    @property
    def length(self) -> int:
        return self.record.length

    @property
    def done(self) -> bool:
        return self.offset == self.record.length

    def sent(self, device_id: str) -> Sent:
        """What a receipt or a quarantine notice for this upload must name."""
        return Sent(device_id, self.seg.seq, self.seg.manifest_sha256 or "", self.record.file_sha256)


class Uploads:
    """Every upload in progress on this unit: opened, resumed, advanced and forgotten here only.

    Owned by the sync worker's thread; not thread-safe (the store it calls is).
    """

    def __init__(self, store: Store, data_dir: Path, device_id: str, chunk_bytes: int, clock: Clock) -> None:
        self._store = store
        self._data_dir = data_dir
        self._device_id = device_id
        self._chunk_bytes = chunk_bytes
        self._clock = clock
        self._sidecar = UploadState(data_dir / FILE_NAME)

    def prune(self) -> None:
        """Forget remembered uploads of entries no longer waiting (acknowledged or quarantined
        while the agent was down, or gone from the index)."""
        for seq in self._sidecar.seqs():
            seg = self._store.segment(seq)
            if seg is None or seg.state not in ("sealed", "uploading"):
                log.info("forgetting the upload of entry %d (%s)", seq, "not indexed" if seg is None else seg.state)
                self._sidecar.drop(seq)

    def open(self, client: HqClient, seg: Segment, fh: BinaryIO) -> UploadSession:
        """The upload of ``seg``: the remembered one if headquarters' URL for it still passes,
        else a new one (raises :class:`agent.sync.errors.ConflictError` when headquarters holds
        another file for this seq, :class:`EntryFailed` when the file cannot be read)."""
        record = self._sidecar.get(seg.seq)
        if record is not None:
            try:
                client.resolve(record.url, f"Resuming {seg.path}")
                return UploadSession(seg, record, resumed=True)
            except ProtocolError as e:
                log.warning("entry %d: forgetting remembered upload: %s", seg.seq, e)
                self._sidecar.drop(seg.seq)
        try:
            length = os.fstat(fh.fileno()).st_size
            file_sha256 = sha256_of(fh)
        except OSError as e:
            raise EntryFailed(f"Reading {seg.path}: {e.strerror}") from e
        metadata = {"device_id": self._device_id, "seq": str(seg.seq), "filename": Path(seg.path).name,
                    "sha256": file_sha256}
        url = client.create(length, metadata)
        record = UploadRecord(url, file_sha256, length, self._chunk_bytes, self._clock.utc_ns())
        self._sidecar.put(seg.seq, record)
        if seg.state == "sealed":
            self._store.mark_state(seg.seq, "uploading")
        return UploadSession(seg, record, resumed=False)

    def resume_point(self, client: HqClient, session: UploadSession) -> None:
        """Set ``session.offset`` from headquarters' HEAD, checked against what was sent.

        Raises :class:`agent.sync.errors.GoneError` when headquarters forgot the upload (the
        caller forgets it and creates it again) and :class:`ProtocolError` when its answer
        cannot be true."""
        seg, rec = session.seg, session.record
        info = client.head(rec.url)
        if info.length != rec.length:
            self._sidecar.drop(seg.seq)
            raise ProtocolError(f"Resuming {seg.path}: headquarters has length {info.length}, the file {rec.length}")
        # Chunks go out whole or not at all (each carries a checksum), so headquarters can be
        # ahead of the last offset recorded here by at most the one chunk whose answer was lost.
        if session.resumed and info.offset > seg.upload_offset + rec.chunk_bytes:
            raise ProtocolError(f"Resuming {seg.path}: headquarters claims {info.offset} bytes, "
                                f"but only {seg.upload_offset} (+ one chunk) were sent")
        session.offset = info.offset
        self._confirm(session)

    def advance(self, session: UploadSession, offset: int) -> None:
        """Headquarters confirmed ``offset`` bytes."""
        session.offset = offset
        self._confirm(session)

    def forget(self, seq: int) -> None:
        """The upload of ``seq`` is settled (receipt, quarantine) or forgotten by headquarters."""
        self._sidecar.drop(seq)

    def _confirm(self, session: UploadSession) -> None:
        self._store.set_upload_offset(session.seg.seq, min(session.offset, session.seg.size_bytes))


def sha256_of(fh: BinaryIO) -> str:
    digest = hashlib.sha256()
    fh.seek(0)
    while block := fh.read(1024 * 1024):
        digest.update(block)
    return digest.hexdigest()
