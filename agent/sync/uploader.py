"""One entry's upload: open or resume its session, send its chunks, and settle it only on
headquarters' signed answer (a receipt, or a quarantine notice)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.evidence.receipt import ReceiptError
from agent.evidence.tlogproof import TlogError
from agent.store import Segment, Store
from agent.sync.client import HqClient
from agent.sync.errors import (
    ChecksumMismatch,
    ConflictError,
    EntryFailed,
    GoneError,
    OffsetMismatch,
    ProtocolError,
    RejectedError,
    TransientError,
)
from agent.sync.policy import capped_send_s, ingest_polls, next_chunk
from agent.sync.receipts import check_notice, check_receipt
from agent.sync.session import Uploads, UploadSession
from agent.sync.tlogview import LogView

log = logging.getLogger(__name__)

MAX_OFFSET_MISMATCHES = 3
MAX_CHECKSUM_MISMATCHES = 2


class UploadHost(Protocol):
    """What an upload needs of the worker that runs it (all on the worker's thread)."""

    def audit(self, action: str, target: str, outcome: str, **detail: Any) -> None: ...

    def alarm(self, kind: str, message: str) -> None: ...

    def defer(self, seg: Segment, reason: str, *, audit: bool = True) -> None: ...

    def settled(self, seg: Segment, receipt: dict[str, Any] | None) -> None:
        """The entry is acknowledged (``receipt``) or quarantined (None): no longer deferred."""

    def progress(self, session: UploadSession, sent_bytes: int = 0) -> None:
        """Headquarters confirmed ``session.offset``, ``sent_bytes`` more than before."""

    def pace(self, n_bytes: int) -> None: ...

    def wait(self, seconds: float) -> None:
        """Wait ``seconds``; raise Stopped when asked to stop meanwhile."""

    def between_chunks(self, client: HqClient, session: UploadSession) -> bool:
        """Raise Stopped when asked to stop, send a heartbeat when one is
        due; True when a waiting entry outranks this one (the upload pauses)."""


class EntryUploader:
    """Uploads one entry at a time for its host. Not thread-safe: the sync thread owns it."""

    def __init__(self, store: Store, uploads: Uploads, data_dir: Path, device_id: str,
                 receipt_key: ed25519.Ed25519PublicKey, bandwidth_bps: int, host: UploadHost,
                 ingest_wait_s: float = 120.0, log_view: LogView | None = None) -> None:
        self._store = store
        self._uploads = uploads
        self._data_dir = data_dir
        self._device_id = device_id
        self._receipt_key = receipt_key
        self._bandwidth_bps = bandwidth_bps
        self._host = host
        self._ingest_wait_s = ingest_wait_s
        self._log_view = log_view or LogView(data_dir, receipt_key)

    def upload(self, client: HqClient, seg: Segment) -> None:
        """Send ``seg`` until it is settled, deferred or paused for a higher priority; raises
        :class:`EntryFailed` for a fault of this entry alone, a SyncError for the rest."""
        path = self._data_dir / seg.path
        try:
            fh = path.open("rb")
        except OSError as e:
            raise EntryFailed(f"Opening {seg.path}: {e.strerror}") from e
        with fh:
            for _ in range(2):  # a second time only when headquarters forgot the upload
                session = self._open(client, seg, fh)
                if session is None:
                    return
                try:
                    self._send(client, session, fh)
                    return
                except GoneError as e:
                    log.warning("entry %d: %s; creating the upload again", seg.seq, e)
                    self._uploads.forget(seg.seq)
            raise ProtocolError(f"Uploading {seg.path}: headquarters forgot the upload it just created")

    def _open(self, client: HqClient, seg: Segment, fh: BinaryIO) -> UploadSession | None:
        try:
            return self._uploads.open(client, seg, fh)
        except ConflictError as e:
            self._host.audit("upload-refused", seg.path, "refused", seq=seg.seq, reason="conflict", error=str(e))
            self._host.alarm("conflict", f"entry {seg.seq}: {e}")
            self._host.defer(seg, str(e), audit=False)
            return None

    def _send(self, client: HqClient, session: UploadSession, fh: BinaryIO) -> None:
        seg, rec = session.seg, session.record
        self._uploads.resume_point(client, session)
        self._host.audit("upload-start", seg.path, "ok", seq=seg.seq, bytes=rec.length, offset=session.offset,
                         resumed=session.resumed)
        self._host.progress(session)
        mismatches = bad_checksums = 0
        while True:
            start, size = next_chunk(session.offset, rec.length, rec.chunk_bytes)
            chunk = os.pread(fh.fileno(), size, start) if size else b""
            if len(chunk) != size:
                raise EntryFailed(f"Reading {seg.path}: file shorter than the {rec.length} bytes announced")
            try:
                result = client.append(rec.url, session.offset, chunk, last=session.offset + size == rec.length,
                                       pace=self._host.pace, paced_s=capped_send_s(size, self._bandwidth_bps))
            except OffsetMismatch as e:
                mismatches += 1
                if mismatches > MAX_OFFSET_MISMATCHES:
                    raise ProtocolError(f"{e} ({mismatches} times in a row)", e.status) from e
                session.offset = client.head(rec.url).offset
                continue
            except ChecksumMismatch as e:
                bad_checksums += 1
                if bad_checksums > MAX_CHECKSUM_MISMATCHES:
                    raise TransientError(f"{e} ({bad_checksums} times in a row)", e.status) from e
                continue
            except RejectedError as e:
                self._refused(session, e)
                return
            except ProtocolError as e:
                if size == 0:  # asking again for the receipt of a finished upload
                    raise EntryFailed(f"Asking for the receipt of {seg.path}: {e}") from e
                raise
            mismatches, bad_checksums = 0, 0
            self._uploads.advance(session, result.offset)
            self._host.progress(session, size)
            if session.done and result.receipt_b64 is None and result.ingest_pending:
                if not self._await_ingest(client, session):
                    return
                continue  # an empty PATCH at the end now carries headquarters' answer
            if session.done:
                self._complete(session, result.receipt_b64, result.tlog_b64)
                return
            if self._host.between_chunks(client, session):
                log.info("entry %d paused at %d/%d for a higher-priority entry", seg.seq, session.offset, rec.length)
                return

    def _await_ingest(self, client: HqClient, session: UploadSession) -> bool:
        """Headquarters holds every byte and is still ingesting (1.3): ask with HEAD, waiting
        longer each time, until it has its answer (True) or ``ingest_wait_s`` has passed; then
        the entry is deferred with its upload remembered (a retry costs a HEAD), no alarm."""
        seg = session.seg
        for wait_s in ingest_polls(self._ingest_wait_s):
            self._host.wait(wait_s)
            if not client.head(session.url).ingest_pending:
                return True
        self._host.defer(seg, f"headquarters is still verifying entry {seg.seq} after "
                              f"{self._ingest_wait_s:.0f} s; asking again later")
        return False

    def _complete(self, session: UploadSession, receipt_b64: str | None, tlog_b64: str | None = None) -> None:
        seg, rec = session.seg, session.record
        try:
            receipt = check_receipt(receipt_b64, self._receipt_key, session.sent(self._device_id))
        except ReceiptError as e:
            message = f"entry {seg.seq} not acknowledged: {e}"
            log.error("%s", message)
            self._host.audit("receipt-rejected", seg.path, "failed", seq=seg.seq, reason=str(e), url=rec.url)
            self._host.alarm("receipt", message)
            self._host.defer(seg, message, audit=False)
            return
        receipt = self._with_inclusion(seg, receipt, tlog_b64)
        self._store.mark_state(seg.seq, "acknowledged", receipt=receipt)
        self._uploads.forget(seg.seq)
        self._host.settled(seg, receipt)
        self._host.audit("upload-complete", seg.path, "ok", seq=seg.seq, bytes=rec.length,
                         contiguous_through=receipt.get("contiguous_through"), hq_key=receipt.get("hq_key"))
        log.info("entry %d acknowledged by headquarters", seg.seq)

    def _with_inclusion(self, seg: Segment, receipt: dict[str, Any], tlog_b64: str | None) -> dict[str, Any]:
        """The receipt with its inclusion proof in headquarters' log, checked, to keep with it. A
        proof that fails raises the ``tlog`` alarm but does not hold the entry back: the signed
        receipt is what acknowledges it; the log is what lets others check headquarters."""
        try:
            kept = self._log_view.receipt_proof(str(receipt["raw_b64"]), tlog_b64)
        except TlogError as e:
            message = f"the receipt of entry {seg.seq} is not proven in headquarters' log: {e}"
            self._host.audit("tlog-proof-rejected", seg.path, "failed", seq=seg.seq, reason=str(e))
            self._host.alarm("tlog", message)
            return receipt
        return receipt if kept is None else {**receipt, "tlog": kept}

    def _refused(self, session: UploadSession, e: RejectedError) -> None:
        """A 422. Quarantined (terminal) only on a notice signed by the pinned receipt key that
        names this upload; anything else is a claim from whoever holds the TLS endpoint: the
        entry stays pending (its upload remembered, so a retry costs a HEAD and an empty PATCH),
        waits ``entry_retry_s`` and alarms."""
        seg = session.seg
        try:
            notice = check_notice(e.notice_b64, self._receipt_key, session.sent(self._device_id))
        except ReceiptError as err:
            message = (f"entry {seg.seq} kept for retry: refusal not signed by headquarters ({err}): "
                       f"{e.code}: {e.detail}")
            self._host.audit("upload-refused", seg.path, "failed", seq=seg.seq, reason="refusal-unverified",
                             error=str(err), code=e.code, message=e.detail, url=session.url)
            self._host.alarm("refusal-unverified", message)
            self._host.defer(seg, message, audit=False)
            return
        self._store.mark_state(seg.seq, "quarantined", receipt=notice)
        self._uploads.forget(seg.seq)
        self._host.settled(seg, None)
        self._host.audit("upload-refused", seg.path, "refused", seq=seg.seq, reason="quarantined",
                         code=notice["code"], message=notice["reason"], upload_id=notice["upload_id"])
        self._host.alarm("quarantined",
                         f"headquarters quarantined entry {seg.seq}: {notice['code']}: {notice['reason']}")
