"""The sync worker: one thread that uploads sealed entries to headquarters and sends heartbeats.

Decisions (order, backoff, bandwidth) are the pure functions of :mod:`agent.sync.policy`; this
module is the shell around them: the store, the files, the sidecar and the HTTP client.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.config import SyncConfig
from agent.evidence.receipt import ReceiptError
from agent.store import Segment, Store, StoreError
from agent.sync.client import (
    AuthError,
    ChecksumMismatch,
    ConfigurationError,
    ConflictError,
    GoneError,
    HqClient,
    OffsetMismatch,
    ProtocolError,
    RejectedError,
    SyncError,
    Timeouts,
    TransientError,
)
from agent.sync.heartbeat import heartbeat_body
from agent.sync.policy import (
    NS_PER_S,
    Backoff,
    bucket_for,
    capped_send_s,
    choose_next,
    next_chunk,
    should_preempt,
)
from agent.sync.receipts import Sent, check_notice, check_receipt
from agent.sync.state import FILE_NAME, UploadRecord, UploadState
from hal.clock import Clock
from hal.keystore import KeyStore

log = logging.getLogger(__name__)

ACTOR = "sync"
MAX_OFFSET_MISMATCHES = 3
MAX_CHECKSUM_MISMATCHES = 2
StatusProvider = Callable[[], Mapping[str, Any]]
Alarm = Callable[[str, str], None]  # (kind, message)


@dataclass(frozen=True, slots=True)
class SyncSettings:
    """How the worker paces itself (seconds unless named otherwise).

    ``interval_s``: how often to look for new entries when idle. ``heartbeat_s``: status to HQ
    this often while reachable. ``bandwidth_bps``: upload cap in bits per second, 0 for none.
    ``chunk_bytes``: bytes per PATCH, at most 4 MiB; after a cut at most this much is sent twice.
    ``auth_retry_s``: after a 401/403, uploads stop and only a heartbeat probes this often.
    ``entry_retry_s``: an entry that failed on its own (unreadable file, conflict, bad
    receipt, a refusal without a valid signed notice) waits this long while the rest of the
    backlog goes on.
    """

    interval_s: float = 5.0
    heartbeat_s: float = 60.0
    bandwidth_bps: int = 0
    chunk_bytes: int = 1024 * 1024
    timeouts: Timeouts = field(default_factory=Timeouts)
    backoff: Backoff = field(default_factory=Backoff)
    auth_retry_s: float = 900.0
    entry_retry_s: float = 600.0

    @classmethod
    def from_config(cls, sync: SyncConfig) -> SyncSettings:
        """The settings of a unit's ``[sync]`` section."""
        return cls(
            interval_s=sync.interval_s,
            heartbeat_s=sync.heartbeat_s,
            bandwidth_bps=sync.bandwidth_bps,
            chunk_bytes=sync.chunk_bytes,
            timeouts=Timeouts(sync.connect_timeout_s, sync.io_timeout_s, sync.ingest_timeout_s,
                              sync.request_deadline_s),
            backoff=Backoff(min(1.0, sync.backoff_max_s), sync.backoff_max_s),
        )


class Stopped(Exception):
    """The worker was asked to stop in the middle of something."""


class EntryFailed(Exception):
    """This entry cannot be uploaded now (its file is unreadable...): defer it, go on with others."""


class SyncWorker:
    """Uploads the unit's sealed entries to headquarters, most important first, and marks each
    acknowledged only on a receipt signed by the pinned receipt key that names what was sent.

    Never touches the recorder: it reads sealed files from disk and the index through the store,
    whose lock it holds only for single short calls. Thread contract: ``start``, ``stop``,
    ``kick`` and ``get_status`` from any thread; everything else runs on the ``sync`` thread
    (or, in tests, on the caller of :meth:`run_once`, with the thread not started).
    """

    def __init__(
        self,
        store: Store,
        data_dir: Path,
        keystore: KeyStore,
        device_id: str,
        hq_url: str,
        ca_path: Path,
        receipt_public_key: ed25519.Ed25519PublicKey,
        clock: Clock,
        settings: SyncSettings,
        status_provider: StatusProvider,
        *,
        on_alarm: Alarm | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._data_dir = Path(data_dir)
        self._keystore = keystore
        self._device_id = device_id
        self._hq_url = hq_url
        self._ca_path = Path(ca_path)
        self._receipt_key = receipt_public_key
        self._clock = clock
        self._settings = settings
        self._status_provider = status_provider
        self._on_alarm = on_alarm
        self._rng = rng or random.Random()
        self._uploads = UploadState(self._data_dir / FILE_NAME)
        self._client: HqClient | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sync", daemon=True)
        # Worker-thread state.
        self._failures = 0
        self._retry_at_ns: int | None = None
        self._next_heartbeat_ns = clock.monotonic_ns()
        self._deferred: dict[int, int] = {}
        self._auth_refused = False
        self._bucket = bucket_for(settings.bandwidth_bps, clock.monotonic_ns())
        self._active: Segment | None = None
        self._pruned = False
        # Shared with get_status, under _lock.
        self._lock = threading.Lock()
        self._status: dict[str, Any] = {
            "state": "starting", "connected": False, "backlog": {"entries": 0, "bytes": 0}, "current": None,
            "last_receipt": None, "last_error": None, "next_retry_mono_ns": None, "alarm": None,
            "last_heartbeat_utc_ns": None, "hq_clock_offset_ms": None, "sent_bytes": 0,
            "last_progress_mono_ns": clock.monotonic_ns(), "deferred": {},
        }

    # ---- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the thread: an upload in flight is abandoned (it resumes at the next start)."""
        self._stop.set()
        self._wake.set()
        client = self._client
        if client is not None:
            client.abort()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        self._set(state="stopped")

    def kick(self) -> None:
        """Look for work now instead of at the next interval (a backoff still applies)."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                wait_s = self.run_once()
            except Exception as e:  # the pass failed outside the protocol (the store...): log, go on
                log.exception("sync pass failed")
                self._set(last_error=self._error(f"{type(e).__name__}: {e}"))
                wait_s = self._settings.interval_s
            self._wake.wait(wait_s)

    # ---- one pass ---------------------------------------------------------------------------

    def run_once(self) -> float:
        """Heartbeat if due and upload what is pending, unless backing off; return the seconds
        until the next pass is due."""
        if self._retry_at_ns is not None and self._mono() < self._retry_at_ns:
            self._refresh_backlog()
            return self._next_wait_s()
        self._retry_at_ns = None
        self._set(next_retry_mono_ns=None)
        if not self._pruned:
            self._prune_sidecar()
        self._refresh_backlog()
        try:
            client = self._get_client()
            if self._auth_refused:
                self._heartbeat(client)  # the probe: raises AuthError while still refused
                self._auth_restored()
            elif self._mono() >= self._next_heartbeat_ns:
                self._heartbeat(client)
            self._upload_backlog(client)
            self._failures = 0
            self._set(state="idle", current=None)
        except Stopped:
            pass
        except AuthError as e:
            self._auth_failed(e)
        except SyncError as e:
            self._failed(e)
        finally:
            self._active = None
            if self._client is not None:
                self._client.close()  # idle connections go stale; a pass opens a fresh one
        self._refresh_backlog()
        return self._next_wait_s()

    def _prune_sidecar(self) -> None:
        """Forget remembered uploads of entries no longer waiting (acknowledged or quarantined
        while the agent was down, or gone from the index)."""
        for seq in self._uploads.seqs():
            seg = self._store.segment(seq)
            if seg is None or seg.state not in ("sealed", "uploading"):
                log.info("forgetting the upload of entry %d (%s)", seq, "not indexed" if seg is None else seg.state)
                self._uploads.drop(seq)
        self._pruned = True

    def _get_client(self) -> HqClient:
        if self._client is None:
            self._client = HqClient(self._hq_url, self._ca_path, self._device_id, self._keystore, self._clock,
                                    self._settings.timeouts)
        return self._client

    def _candidates(self) -> list[Segment]:
        return self._store.segments("uploading") + self._store.pending_upload()

    def _upload_backlog(self, client: HqClient) -> None:
        while not self._stop.is_set():
            entry = choose_next(self._candidates(), self._deferred, self._mono())
            if entry is None:
                return
            self._active = entry
            try:
                self._upload(client, entry)
            except EntryFailed as e:
                self._defer(entry, str(e))
            self._active = None
            self._refresh_backlog()
            if self._mono() >= self._next_heartbeat_ns:
                self._heartbeat(client)
        raise Stopped

    # ---- one entry --------------------------------------------------------------------------

    def _upload(self, client: HqClient, seg: Segment) -> None:
        path = self._data_dir / seg.path
        try:
            fh = path.open("rb")
        except OSError as e:
            raise EntryFailed(f"Opening {seg.path}: {e.strerror}") from e
        with fh:
            for _ in range(2):  # a second time only when headquarters forgot the upload
                record, resumed = self._ensure_upload(client, seg, fh)
                if record is None:
                    return
                try:
                    self._send(client, seg, record, fh, resumed)
                    return
                except GoneError as e:
                    log.warning("entry %d: %s; creating the upload again", seg.seq, e)
                    self._uploads.drop(seg.seq)
            raise ProtocolError(f"Uploading {seg.path}: headquarters forgot the upload it just created")

    def _ensure_upload(self, client: HqClient, seg: Segment, fh: BinaryIO) -> tuple[UploadRecord | None, bool]:
        """The upload for ``seg``: the one remembered in the sidecar, or a new one (None when
        headquarters refused to create it). The flag says whether it was remembered."""
        record = self._uploads.get(seg.seq)
        if record is not None:
            try:
                client.resolve(record.url, f"Resuming {seg.path}")
                return record, True
            except ProtocolError as e:
                log.warning("entry %d: forgetting remembered upload: %s", seg.seq, e)
                self._uploads.drop(seg.seq)
        try:
            length = os.fstat(fh.fileno()).st_size
            file_sha256 = _sha256_of(fh)
        except OSError as e:
            raise EntryFailed(f"Reading {seg.path}: {e.strerror}") from e
        metadata = {"device_id": self._device_id, "seq": str(seg.seq), "filename": Path(seg.path).name,
                    "sha256": file_sha256}
        try:
            url = client.create(length, metadata)
        except ConflictError as e:
            self._audit("upload-refused", seg.path, "refused", seq=seg.seq, reason="conflict", error=str(e))
            self._alarm("conflict", f"entry {seg.seq}: {e}")
            self._defer(seg, str(e), audit=False)
            return None, False
        record = UploadRecord(url, file_sha256, length, self._settings.chunk_bytes, self._clock.utc_ns())
        self._uploads.put(seg.seq, record)
        if seg.state == "sealed":
            self._store.mark_state(seg.seq, "uploading")
        return record, False

    def _send(self, client: HqClient, seg: Segment, rec: UploadRecord, fh: BinaryIO, resumed: bool) -> None:
        info = client.head(rec.url)
        if info.length != rec.length:
            self._uploads.drop(seg.seq)
            raise ProtocolError(f"Resuming {seg.path}: headquarters has length {info.length}, the file {rec.length}")
        # Chunks go out whole or not at all (each carries a checksum), so headquarters can be
        # ahead of the last offset recorded here by at most the one chunk whose answer was lost.
        if resumed and info.offset > seg.upload_offset + rec.chunk_bytes:
            raise ProtocolError(f"Resuming {seg.path}: headquarters claims {info.offset} bytes, "
                                f"but only {seg.upload_offset} (+ one chunk) were sent")
        offset = info.offset
        self._audit("upload-start", seg.path, "ok", seq=seg.seq, bytes=rec.length, offset=offset, resumed=resumed)
        self._progress(seg, offset, rec.length)
        mismatches = bad_checksums = 0
        while True:
            start, size = next_chunk(offset, rec.length, rec.chunk_bytes)
            chunk = os.pread(fh.fileno(), size, start) if size else b""
            if len(chunk) != size:
                raise EntryFailed(f"Reading {seg.path}: file shorter than the {rec.length} bytes announced")
            try:
                result = client.append(rec.url, offset, chunk, last=offset + size == rec.length, pace=self._pace,
                                       paced_s=capped_send_s(size, self._settings.bandwidth_bps))
            except OffsetMismatch as e:
                mismatches += 1
                if mismatches > MAX_OFFSET_MISMATCHES:
                    raise ProtocolError(f"{e} ({mismatches} times in a row)", e.status) from e
                offset = client.head(rec.url).offset
                continue
            except ChecksumMismatch as e:
                bad_checksums += 1
                if bad_checksums > MAX_CHECKSUM_MISMATCHES:
                    raise TransientError(f"{e} ({bad_checksums} times in a row)", e.status) from e
                continue
            except RejectedError as e:
                self._refused(seg, rec, e)
                return
            except ProtocolError as e:
                if size == 0:  # asking again for the receipt of a finished upload
                    raise EntryFailed(f"Asking for the receipt of {seg.path}: {e}") from e
                raise
            offset, mismatches, bad_checksums = result.offset, 0, 0
            self._add_sent(size)
            self._progress(seg, offset, rec.length)
            if offset == rec.length:
                self._complete(seg, rec, result.receipt_b64)
                return
            if self._stop.is_set():
                raise Stopped
            if self._mono() >= self._next_heartbeat_ns:
                self._heartbeat(client)
            now = self._mono()
            waiting = [c for c in self._store.pending_upload(limit=8) if self._deferred.get(c.seq, 0) <= now]
            if should_preempt(seg, waiting):
                log.info("entry %d paused at %d/%d for a higher-priority entry", seg.seq, offset, rec.length)
                return

    def _complete(self, seg: Segment, rec: UploadRecord, receipt_b64: str | None) -> None:
        sent = Sent(self._device_id, seg.seq, seg.manifest_sha256 or "", rec.file_sha256)
        try:
            receipt = check_receipt(receipt_b64, self._receipt_key, sent)
        except ReceiptError as e:
            message = f"entry {seg.seq} not acknowledged: {e}"
            log.error("%s", message)
            self._audit("receipt-rejected", seg.path, "failed", seq=seg.seq, reason=str(e), url=rec.url)
            self._alarm("receipt", message)
            self._defer(seg, message, audit=False)
            return
        self._store.mark_state(seg.seq, "acknowledged", receipt=receipt)
        self._uploads.drop(seg.seq)
        self._undefer(seg.seq)
        self._audit("upload-complete", seg.path, "ok", seq=seg.seq, bytes=rec.length,
                    contiguous_through=receipt.get("contiguous_through"), hq_key=receipt.get("hq_key"))
        log.info("entry %d acknowledged by headquarters", seg.seq)
        self._set(last_receipt={"seq": seg.seq, "utc_ns": self._clock.utc_ns(),
                                "received_utc_ns": receipt.get("received_utc_ns")})

    def _refused(self, seg: Segment, rec: UploadRecord, e: RejectedError) -> None:
        """A 422. Quarantined (terminal) only on a notice signed by the pinned receipt key that
        names this upload; anything else is a claim from whoever holds the TLS endpoint: the
        entry stays pending (its upload remembered, so a retry costs a HEAD and an empty PATCH),
        waits ``entry_retry_s`` and alarms."""
        sent = Sent(self._device_id, seg.seq, seg.manifest_sha256 or "", rec.file_sha256)
        try:
            notice = check_notice(e.notice_b64, self._receipt_key, sent)
        except ReceiptError as err:
            message = (f"entry {seg.seq} kept for retry: refusal not signed by headquarters ({err}): "
                       f"{e.code}: {e.detail}")
            self._audit("upload-refused", seg.path, "failed", seq=seg.seq, reason="refusal-unverified",
                        error=str(err), code=e.code, message=e.detail, url=rec.url)
            self._alarm("refusal-unverified", message)
            self._defer(seg, message, audit=False)
            return
        self._store.mark_state(seg.seq, "quarantined", receipt=notice)
        self._uploads.drop(seg.seq)
        self._undefer(seg.seq)
        self._audit("upload-refused", seg.path, "refused", seq=seg.seq, reason="quarantined", code=notice["code"],
                    message=notice["reason"], upload_id=notice["upload_id"])
        self._alarm("quarantined", f"headquarters quarantined entry {seg.seq}: {notice['code']}: {notice['reason']}")

    def _defer(self, seg: Segment, reason: str, *, audit: bool = True) -> None:
        retry_s = self._settings.entry_retry_s
        self._deferred[seg.seq] = self._mono() + round(retry_s * NS_PER_S)
        self._publish_deferred()
        if audit:
            self._audit("upload-error", seg.path, "failed", seq=seg.seq, error=reason, retry_in_s=retry_s)
        log.warning("entry %d deferred %.0f s: %s", seg.seq, retry_s, reason)
        self._set(last_error=self._error(reason, seg.seq))

    def _undefer(self, seq: int) -> None:
        if self._deferred.pop(seq, None) is not None:
            self._publish_deferred()

    def _publish_deferred(self) -> None:
        self._set(deferred={seq: at for seq, at in sorted(self._deferred.items())})

    def _pace(self, n_bytes: int) -> None:
        self._bucket, wait_s = self._bucket.take(n_bytes, self._mono())
        while wait_s > 0:
            if self._stop.is_set():
                raise Stopped
            step = min(wait_s, 0.1)  # short sleeps, so a stop is noticed
            self._clock.sleep(step)
            wait_s -= step

    # ---- heartbeat --------------------------------------------------------------------------

    def _heartbeat(self, client: HqClient) -> None:
        """Send the status; a network failure raises (the pass backs off and the heartbeat stays due)."""
        body = heartbeat_body(self._heartbeat_status(), self._keystore)
        next_ns = self._mono() + round(self._settings.heartbeat_s * NS_PER_S)
        try:
            reply = client.heartbeat(body)
        except ProtocolError as e:  # an odd answer to a heartbeat must not hold up uploads
            log.warning("%s", e)
            self._next_heartbeat_ns = next_ns
            self._set(connected=True, last_error=self._error(str(e)))
            return
        self._next_heartbeat_ns = next_ns
        now = self._clock.utc_ns()
        server = reply.get("server_utc_ns")
        offset_ms = round((server - now) / 1e6) if isinstance(server, int) else None
        self._set(connected=True, last_heartbeat_utc_ns=now, hq_clock_offset_ms=offset_ms)

    def _heartbeat_status(self) -> dict[str, Any]:
        try:
            unit = dict(self._status_provider())
        except Exception as e:  # the heartbeat says the provider failed rather than not going out
            unit = {"error": f"{type(e).__name__}: {e}"}
        head = self._store.chain_head(self._device_id)
        with self._lock:
            backlog, last = self._status["backlog"], self._status["last_receipt"]
            sync = {"backlog_entries": backlog["entries"], "backlog_bytes": backlog["bytes"],
                    "last_receipt_seq": None if last is None else last["seq"]}
        return {**unit, "device_id": self._device_id, "utc_ns": self._clock.utc_ns(),
                "chain_head": None if head is None else {"seq": head[0], "hash": head[1]}, "sync": sync}

    # ---- failures ---------------------------------------------------------------------------

    def _failed(self, e: SyncError) -> None:
        if self._stop.is_set():
            log.info("sync stopped: %s", e)
            return
        self._failures += 1
        delay_s = self._settings.backoff.delay_s(self._failures, self._rng)
        self._retry_at_ns = self._mono() + round(delay_s * NS_PER_S)
        seg = self._active
        if seg is not None:
            self._audit("upload-error", seg.path, "failed", seq=seg.seq, error=str(e), status=e.status,
                        retry_in_s=round(delay_s, 3))
        log.warning("sync: %s; retrying in %.1f s (failure %d)", e, delay_s, self._failures)
        if isinstance(e, ConfigurationError) and self._failures == 1:
            self._alarm("config", str(e))
        self._set(state="backoff", connected=e.status is not None, current=None,
                  last_error=self._error(str(e), None if seg is None else seg.seq),
                  next_retry_mono_ns=self._retry_at_ns)

    def _auth_failed(self, e: AuthError) -> None:
        first = not self._auth_refused
        self._auth_refused = True
        self._retry_at_ns = self._mono() + round(self._settings.auth_retry_s * NS_PER_S)
        if first:
            self._audit("upload-refused", self._device_id, "refused", reason="unauthorised", status=e.status,
                        error=str(e))
            self._alarm("auth", f"headquarters refuses this unit, uploads stopped: {e}")
        self._set(state="refused", connected=True, current=None, last_error=self._error(str(e)),
                  next_retry_mono_ns=self._retry_at_ns)

    def _auth_restored(self) -> None:
        self._auth_refused = False
        self._audit("upload-authorised", self._device_id, "ok", reason="headquarters accepts the unit again")
        log.info("headquarters accepts this unit again; uploads resume")
        with self._lock:
            if self._status["alarm"] is not None and self._status["alarm"]["kind"] == "auth":
                self._status["alarm"] = None

    def _alarm(self, kind: str, message: str) -> None:
        log.error("sync alarm (%s): %s", kind, message)
        self._set(alarm={"kind": kind, "message": message, "utc_ns": self._clock.utc_ns()})
        if self._on_alarm is not None:
            try:
                self._on_alarm(kind, message)
            except Exception:
                log.exception("alarm callback failed")

    # ---- status -----------------------------------------------------------------------------

    def get_status(self) -> dict[str, Any]:
        """A snapshot for the console and the health report."""
        mono, utc = self._clock.monotonic_ns(), self._clock.utc_ns()
        with self._lock:
            st: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in self._status.items()}
        retry: int | None = st.pop("next_retry_mono_ns")
        # Entries set aside after failing on their own, with the seconds until each is tried again.
        st["deferred"] = {seq: round(max(0, at - mono) / NS_PER_S, 3) for seq, at in st["deferred"].items()}
        progress: int = st.pop("last_progress_mono_ns")
        st["next_retry_utc_ns"] = None if retry is None else utc + retry - mono
        st["next_retry_in_s"] = None if retry is None else max(0.0, (retry - mono) / NS_PER_S)
        # How long the backlog has waited without a byte confirmed: what "silently stalled" looks like.
        st["stalled_s"] = round((mono - progress) / NS_PER_S, 3) if st["backlog"]["entries"] else 0.0
        st["hq_url"] = self._hq_url
        return st

    def _refresh_backlog(self) -> None:
        try:
            entries = self._candidates()
        except StoreError as e:
            log.warning("reading the backlog: %s", e)
            return
        remaining = sum(max(0, s.size_bytes - s.upload_offset) for s in entries)
        self._set(backlog={"entries": len(entries), "bytes": remaining})

    def _progress(self, seg: Segment, offset: int, length: int) -> None:
        self._store.set_upload_offset(seg.seq, min(offset, seg.size_bytes))
        self._set(state="uploading", connected=True, current={"seq": seg.seq, "offset": offset, "length": length},
                  last_progress_mono_ns=self._mono())

    def _add_sent(self, n_bytes: int) -> None:
        with self._lock:
            self._status["sent_bytes"] += n_bytes

    def _set(self, **values: Any) -> None:
        with self._lock:
            self._status.update(values)

    def _error(self, message: str, seq: int | None = None) -> dict[str, Any]:
        return {"message": message, "seq": seq, "utc_ns": self._clock.utc_ns()}

    def _audit(self, action: str, target: str, outcome: str, **detail: Any) -> None:
        try:
            self._store.audit(ACTOR, action, target, outcome, **detail)
        except StoreError as e:
            log.error("cannot audit %s of %s: %s", action, target, e)

    def _mono(self) -> int:
        return self._clock.monotonic_ns()

    def _next_wait_s(self) -> float:
        now = self._mono()
        if self._retry_at_ns is not None:
            return max(0.0, (self._retry_at_ns - now) / NS_PER_S)
        return max(0.0, min(self._settings.interval_s, (self._next_heartbeat_ns - now) / NS_PER_S))


def _sha256_of(fh: BinaryIO) -> str:
    digest = hashlib.sha256()
    fh.seek(0)
    while block := fh.read(1024 * 1024):
        digest.update(block)
    return digest.hexdigest()
