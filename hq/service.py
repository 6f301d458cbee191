"""The sync API of docs/sync-protocol.md, independent of the HTTP server: routing, authentication,
tus state handling and heartbeats, each request answered with a ``Response``.

``hq.asgi`` parses HTTP and calls ``route`` (to bound the body before reading it), ``admit``
(the signature over the headers, before any body is read), ``check_body`` and ``answer``; tests
drive ``handle``, which does the three in one call.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import threading
from collections.abc import Callable, Mapping
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.evidence.httpsig import NONCE_TTL_S, SignatureError, check_digest, verify_signed_headers
from agent.evidence.note import parse_checkpoint, split
from agent.evidence.receipt import ReceiptError, encode_receipt_header, verify_heartbeat
from agent.evidence.tlogproof import chain_head_leaf, encode_consistency
from hq.audit import Auditor
from hq.errors import ApiError, error_body
from hq.index import Index
from hq.ingest import Ingestor, LocalDeviceLocks, device_lock_for
from hq.ingest_pool import IngestBusy, IngestJobs, IngestPool, IngestSettings, resubmit
from hq.lifecycle_service import LifecycleService
from hq.live.service import LiveService
from hq.live.whip import MAX_SDP_BYTES, WHIP_PATH, whip_answer
from hq.quotas import NS_PER_S, HeartbeatLimiter, Quotas, admit_upload, expire_abandoned, open_uploads
from hq.records import OPEN_UPLOAD_STATES, Upload
from hq.refusals import RefusalLog
from hq.requests import RequestError, UnitRequests
from hq.storage import EvidenceStore, UploadStore
from hq.tlog import Leaf, TlogStoreError, TransparencyLog
from hq.tus import (
    DEFAULT_MAX_SIZE,
    MAX_CHUNK_BYTES,
    OFFSET_CONTENT_TYPE,
    STATUS_CHECKSUM_MISMATCH,
    TUS_VERSION,
    UploadMeta,
    check_resumable,
    encode_metadata,
    expires_header,
    header,
    options_headers,
    parse_checksum,
    parse_metadata,
    parse_uint,
)
from hq.witness_client import Cosigning, WitnessPolicy, news

log = logging.getLogger(__name__)

UPLOADS_PATH = "/v1/uploads/"
HEARTBEAT_PATH = "/v1/heartbeat"
REQUESTS_PATH = "/v1/requests"
MAX_HEARTBEAT_BYTES = 64 * 1024
MAX_RESULT_BYTES = 64 * 1024
REQUESTS_HEADER = "Bodycam-Requests"  # how many signed requests a poll's answer carries
QUARANTINE_HEADER = "Bodycam-Quarantine"  # the signed notice on a 422 (docs/sync-protocol.md)
# RFC 9421 section 5.1 names no scheme token; "Signature" with the parameters this service checks.
WWW_AUTHENTICATE = {"WWW-Authenticate": 'Signature realm="bodycam-hq", alg="ed25519", label="sig1"'}
INGEST_HEADER = "Bodycam-Ingest"  # "pending" while a completed upload waits for ingest (1.3)
TLOG_HEADER = "Bodycam-Tlog-Inclusion"  # the receipt's inclusion proof in the transparency log (1.5)
TLOG_SEEN_HEADER = "Bodycam-Tlog-Size"  # the size of the checkpoint a unit last saw, on its heartbeat (1.5)
BUSY_RETRY_AFTER_S = 30
_UPLOAD_PATH = re.compile(r"^/v1/uploads/([0-9a-f]{32})$")
_WHIP_RESOURCE = re.compile(r"^/v1/live/whip/([A-Za-z0-9_-]{16,64})$")


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class Route:
    """Which operation a request asks for, and how large a body it may carry."""

    name: str  # options, create, head, patch, terminate, heartbeat, poll, result
    upload_id: str | None
    max_body: int


def json_response(status: int, doc: object, headers: Mapping[str, str] | None = None) -> Response:
    h = {"Content-Type": "application/json", **(headers or {})}
    return Response(status, h, json.dumps(doc, sort_keys=True).encode("utf-8"))


def error_response(err: ApiError) -> Response:
    return Response(err.status, {"Content-Type": "application/json", **err.headers}, err.body())


_ROUTES: dict[tuple[str, str], str] = {
    ("OPTIONS", "uploads"): "options",
    ("POST", "uploads"): "create",
    ("HEAD", "upload"): "head",
    ("PATCH", "upload"): "patch",
    ("DELETE", "upload"): "terminate",
    ("POST", "heartbeat"): "heartbeat",
    ("POST", "whip"): "whip",  # live view (hq/live/whip.py): a unit's WHIP offer
    ("OPTIONS", "whip"): "whip-ice",  # its ICE servers (TURN credentials) before the offer
    ("DELETE", "whip-resource"): "whip-end",
    ("GET", "requests"): "poll",
    ("POST", "requests"): "result",
}
_NOT_TUS = ("heartbeat", "poll", "result")


class HqService:
    """Answers unit requests. Thread-safe: the index serialises its writes, a per-upload lock
    serialises appends to one upload, and completed uploads are ingested by a bounded pool of
    workers (:mod:`hq.ingest_pool`), serialised per device only. ``close`` stops the pool."""

    def __init__(
        self,
        index: Index,
        store: EvidenceStore,
        uploads: UploadStore,
        receipt_key: ed25519.Ed25519PrivateKey,
        now_ns: Callable[[], int],
        max_size: int = DEFAULT_MAX_SIZE,
        ingest: IngestSettings | None = None,
        quotas: Quotas | None = None,
        tlog: TransparencyLog | None = None,
        witnesses: WitnessPolicy | None = None,
        lifecycle: LifecycleService | None = None,
    ) -> None:
        self.index = index
        self.lifecycle = lifecycle
        self.tlog = tlog
        policy = witnesses or WitnessPolicy()
        # Heartbeats answer with the newest cosigned checkpoint when units require a witness.
        self._units_see_cosigned = policy.units_need_cosigned
        self.cosigning = Cosigning(tlog, policy, now_ns) if tlog is not None and policy.witnesses else None
        self._witness_outcomes: dict[str, str] = {}
        self._store = store
        self.uploads = uploads
        self.quotas = quotas = quotas or Quotas()
        self.max_size = min(max_size, quotas.upload_length_max_bytes)
        self._heartbeat_limit = HeartbeatLimiter(quotas, index.heartbeat_count_since)
        self._create_locks = LocalDeviceLocks()
        self._now_ns = now_ns
        self.now_ns = now_ns  # the service's clock, for the layers built on it (hq/web)
        self.audit = Auditor(index, "hq-api", now_ns)
        self.live: LiveService | None = None  # live view, when serve is given a media server (hq/live/)
        self._closers: list[Callable[[], object]] = []
        self.refusals = RefusalLog(self.audit, now_ns)
        self.device_locks = LocalDeviceLocks()
        self.ingestor = Ingestor(
            index, store, uploads, receipt_key, Auditor(index, "hq-ingest", now_ns), now_ns,
            device_lock=device_lock_for(index, self.device_locks), tlog=tlog,
            custody=None if lifecycle is None else lifecycle.custody,
        )
        self._ingest = ingest = ingest or IngestSettings()
        self._jobs = IngestJobs(index, self.ingestor, now_ns, ingest.claim_lease_s)
        self.pool = IngestPool(self._jobs.run, ingest.workers, ingest.queue_max)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        # The operations room listens (hq/ops.py): a heartbeat stored, a request with a refused key.
        self.on_heartbeat: Callable[[str, dict[str, Any], int], None] | None = None
        self.on_key_refused: Callable[[str, Callable[[str], bool]], None] | None = None
        self.requests = UnitRequests(index, receipt_key, self.audit, now_ns)

    @property
    def store(self) -> EvidenceStore:
        """Where this service keeps evidence: for the layers built on it (hq/web's playback)."""
        return self._store

    def close(self) -> None:
        """Stop ingesting: uploads being ingested finish, queued ones stay complete in the index;
        then what ``on_close`` registered (live view's viewers and streams)."""
        self.pool.close()
        for closer in self._closers:
            try:
                closer()
            except Exception:
                log.exception("closing the service")

    def on_close(self, closer: Callable[[], object]) -> None:
        self._closers.append(closer)

    def observe(self, ingest_done: Callable[[int, float, str], None]) -> Callable[[], int]:
        """Report each ingest to ``ingest_done(size_bytes, seconds, outcome)``; returns the queue depth."""
        self._jobs.observer = ingest_done
        return self.pool.depth

    def maintain(self) -> None:
        """One periodic pass (``hq.app.Maintenance``): completed uploads left behind are queued,
        abandoned ones expire, witnesses are asked to cosign the newest checkpoint, the index's
        retention runs (expired nonces, heartbeats past the policy, positions past theirs), and the
        evidence lifecycle's pass (holds, the deletion queue, deletions)."""
        queued = self.resume_ingest()
        if queued:
            log.info("%d completed upload(s) queued for ingest again", queued)
        expired = expire_abandoned(self.index, self.uploads, self.audit, self.quotas, self._now_ns(), self._lock_for)
        if expired:
            log.info("%d abandoned upload(s) expired", expired)
        if self.cosigning is not None:
            self._ask_witnesses(self.cosigning)
        pruned = self.index.prune(self._now_ns())  # one bounded batch of each kind; the next pass does more
        if any(pruned.values()):
            log.info("retention: %s", ", ".join(f"{k} {v}" for k, v in sorted(pruned.items()) if v))
        if self.lifecycle is not None:  # legal holds, the deletion queue, deletions (hq/lifecycle_service.py)
            done = self.lifecycle.run_pass()
            if any(done.values()):
                log.info("lifecycle: %s", ", ".join(f"{k} {v}" for k, v in sorted(done.items()) if v))

    def _ask_witnesses(self, cosigning: Cosigning) -> None:
        """One cosigning round; a witness that starts refusing (a fork it saw, a key it does not
        know) or stops is in the audit log, once per change (``news``)."""
        outcomes = cosigning.run()
        for witness, outcome in outcomes.items():
            log.log(logging.INFO if outcome.startswith("cosigned") else logging.ERROR, "witness %s: %s",
                    witness, outcome)
        for witness, outcome in news(self._witness_outcomes, outcomes).items():
            result = "ok" if outcome.startswith("cosigned") else "refused" if outcome.startswith("refused") \
                else "failed"
            self.audit.record("witness-cosign", "hq", f"witness:{witness}", result, detail=outcome)
        self._witness_outcomes = outcomes

    def resume_ingest(self, sole_node: bool = False) -> int:
        """Queue completed uploads nobody is ingesting (after a restart, a full queue, a node
        that stopped mid-ingest); return how many. ``sole_node``: see IngestJobs.leftover."""
        return resubmit(self._jobs, self.pool, sole_node)

    # -- routing and authentication -------------------------------------------------------

    @staticmethod
    def route(method: str, path: str) -> Route:
        """Map a request line to an operation; 404 for unknown paths, 405 for wrong methods."""
        m = _UPLOAD_PATH.match(path) or _WHIP_RESOURCE.match(path)
        where = "uploads" if path == UPLOADS_PATH else "heartbeat" if path == HEARTBEAT_PATH else \
            "requests" if path == REQUESTS_PATH else \
            "whip" if path == WHIP_PATH else ("upload" if path.startswith(UPLOADS_PATH) else "whip-resource") if m \
            else ""
        if not where:
            raise ApiError(404, "not-found", f"no such resource {path!r}")
        name = _ROUTES.get((method, where))
        if name is None:
            allowed = ", ".join(sorted(meth for meth, w in _ROUTES if w == where))
            raise ApiError(405, "method-not-allowed", f"{method} is not allowed here", {"Allow": allowed})
        limit = {"patch": MAX_CHUNK_BYTES, "heartbeat": MAX_HEARTBEAT_BYTES, "whip": MAX_SDP_BYTES,
                 "result": MAX_RESULT_BYTES}.get(name, 0)
        return Route(name, m.group(1) if m else None, limit)

    def _public_key(self, key_id: str) -> ed25519.Ed25519PublicKey | None:
        device = self.index.device(key_id)
        if device is None or not device.active:
            return None
        key = serialization.load_pem_public_key(device.public_pem.encode("ascii"))
        return key if isinstance(key, ed25519.Ed25519PublicKey) else None

    def _nonce_seen(self, key_id: str, nonce: str, now_s: int) -> bool:
        return self.index.nonce_seen(key_id, nonce, now_s, NONCE_TTL_S)

    def authenticate(self, method: str, target_uri: str, headers: Mapping[str, str], peer: str) -> str:
        """The enrolled device that signed this request's headers (its declared ``Content-Digest``
        included), checked before any body is read; 401, audited as a refusal, otherwise.

        ``target_uri`` is built by the HTTP layer from this service's configured origin, never
        from the client's ``Host``; ``method`` is the method the signature must cover.
        """
        now_s = self._now_ns() // 1_000_000_000
        try:
            return verify_signed_headers(method, target_uri, headers, self._public_key, now_s, self._nonce_seen)
        except SignatureError as exc:
            self.refusals.refused(peer, exc.reason, urlsplit(target_uri).path, exc.key_id)
            if exc.key_id:
                _tell(self.on_key_refused, exc.key_id,
                      lambda pem: _signed_by(pem, method, target_uri, headers, now_s))
            raise ApiError(401, "unauthorized", exc.message, WWW_AUTHENTICATE) from exc

    def check_body(self, device_id: str, headers: Mapping[str, str], body: bytes, target_uri: str, peer: str) -> None:
        """After ``authenticate``: the body read is the one the signed ``Content-Digest`` names."""
        try:
            check_digest(headers, body, device_id)
        except SignatureError as exc:
            self.refusals.refused(peer, exc.reason, urlsplit(target_uri).path, device_id)
            raise ApiError(401, "unauthorized", exc.message, WWW_AUTHENTICATE) from exc

    def admit(self, route: Route, method: str, target_uri: str, headers: Mapping[str, str], peer: str) -> str | None:
        """What can be decided before the body: the device that signed (None for ``options``)."""
        if route.name == "options":
            return None
        if route.name not in _NOT_TUS:
            check_resumable(headers)
        return self.authenticate(method, target_uri, headers, peer)

    def handle(
        self, route: Route, method: str, target_uri: str, headers: Mapping[str, str], body: bytes, peer: str
    ) -> Response:
        """Authenticate and answer one request whose body has been read (at most ``route.max_body``):
        ``admit``, ``check_body`` and ``answer`` in one call, for callers that hold the body already."""
        try:
            device_id = self.admit(route, method, target_uri, headers, peer)
            if device_id is not None:
                self.check_body(device_id, headers, body, target_uri, peer)
            return self.answer(route, device_id, headers, body)
        except ApiError as err:
            return error_response(err)

    def answer(
        self, route: Route, device_id: str | None, headers: Mapping[str, str], body: bytes,
        ingest_wait_s: float | None = None,
    ) -> Response:
        """Answer an admitted request whose body matched its digest. ``ingest_wait_s``: how long a
        completing PATCH waits here for its ingest (None: ``IngestSettings.wait_s``; 0 for a caller
        that awaits ``pool.pending(upload_id)`` itself and then asks ``collect``)."""
        try:
            if route.name == "options":
                return Response(204, options_headers(self.max_size))
            assert device_id is not None
            if route.name == "heartbeat":
                seen = header(headers, TLOG_SEEN_HEADER.lower())
                return self.heartbeat(device_id, body, parse_uint(seen, TLOG_SEEN_HEADER) if seen else None)
            if route.name in ("whip", "whip-end", "whip-ice"):
                return Response(*whip_answer(self.live, route.name, route.upload_id, device_id, headers, body))
            if route.name == "poll":
                return self.poll(device_id)
            if route.name == "result":
                return self.result(device_id, body)
            if route.name == "create":
                return self.create(device_id, headers)
            assert route.upload_id is not None
            if route.name == "head":
                return self.head(device_id, route.upload_id)
            if route.name == "patch":
                return self.patch(device_id, route.upload_id, headers, body, ingest_wait_s)
            return self.terminate(device_id, route.upload_id)
        except ApiError as err:
            return error_response(err)

    def readiness(self) -> dict[str, str]:
        """What ``/readyz`` reports: each dependency ``ok`` or why not (never raises)."""
        checks: dict[str, str] = {}
        for name, probe in (("index", self._probe_index), ("store", self._probe_store)):
            try:
                probe()
                checks[name] = "ok"
            except Exception as exc:  # noqa: BLE001 - a probe reports any failure, it never raises
                checks[name] = f"{type(exc).__name__}: {exc}"[:200]
        return checks

    def _probe_index(self) -> None:
        ping = getattr(self.index, "ping", None)  # a fleet index answers a round trip
        if callable(ping):
            ping()
        else:
            self.index.device("")

    def _probe_store(self) -> None:
        for held in (self._store, self.uploads):
            check = getattr(held, "check", None)  # a fleet store checks its bucket
            if callable(check):
                check()
                continue
            root = getattr(held, "root", None)
            if root is not None and not os.access(root, os.W_OK | os.X_OK):
                raise OSError(f"{held.__class__.__name__} cannot write its folder")

    # -- tus --------------------------------------------------------------------------------

    def _lock_for(self, upload_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(upload_id, threading.Lock())

    def _own_upload(self, device_id: str, upload_id: str) -> Upload:
        upload = self.index.upload(upload_id)
        # Another device's upload is as invisible as a missing one.
        if upload is None or upload.device_id != device_id or upload.state in ("terminated", "expired"):
            raise ApiError(404, "no-such-upload", f"upload {upload_id} does not exist")
        return upload

    def create(self, device_id: str, headers: Mapping[str, str]) -> Response:
        if header(headers, "upload-defer-length") is not None:
            raise ApiError(400, "unsupported", "Upload-Defer-Length is not supported: send Upload-Length")
        length = parse_uint(header(headers, "upload-length"), "Upload-Length")
        if length == 0:
            raise ApiError(400, "empty", "an evidence file is never empty")
        if length > self.max_size:
            raise ApiError(413, "too-large", f"Upload-Length exceeds Tus-Max-Size {self.max_size}")
        meta = parse_metadata(header(headers, "upload-metadata"))
        target = f"{meta.device_id}/{meta.seq}"
        if meta.device_id != device_id:
            self.audit.record("upload-create", device_id, target, "refused", reason="other-device")
            raise ApiError(403, "other-device", f"device {device_id!r} cannot upload entries of {meta.device_id!r}")
        # One device's creations one at a time, so two cannot both pass the quota.
        with self._create_locks.hold(device_id):
            return self._create(device_id, meta, length)

    def _create(self, device_id: str, meta: UploadMeta, length: int) -> Response:
        target = f"{device_id}/{meta.seq}"
        held = self.index.evidence(device_id, meta.seq)
        if held is not None:
            if held.file_sha256 != meta.sha256:
                self.audit.record("upload-create", device_id, target, "refused", reason="conflict", sha256=meta.sha256)
                raise ApiError(409, "conflict", f"seq {meta.seq} is already stored with a different SHA-256")
            done = self.index.find_upload(device_id, meta.seq, meta.sha256, ("stored",))
            if done is not None:
                receipt = self.ingestor.issue_receipt(device_id, meta.seq)
                proof = self.ingestor.log_receipt(device_id, meta.seq, receipt)
                self.audit.record("upload-create", device_id, target, "duplicate", upload_id=done.upload_id)
                return Response(201, {**self._location(done), "Upload-Offset": str(done.length),
                                      **_receipt(receipt, proof)})
        existing = self.index.find_upload(device_id, meta.seq, meta.sha256, OPEN_UPLOAD_STATES)
        if existing is not None and existing.length == length:
            if existing.state != "receiving":
                return Response(201, {**self._location(existing), "Upload-Offset": str(length)})
            offset = str(self.uploads.size(existing.upload_id))
            return Response(201, {**self._location(existing), "Upload-Offset": offset,
                                  **self._expires(existing.updated_utc_ns)})
        try:
            admit_upload(self.quotas, open_uploads(self.index, device_id), length)
        except ApiError as refused:
            log.warning("upload of %s refused: %s", target, refused.message)
            raise
        now = self._now_ns()
        upload = Upload(
            secrets.token_hex(16), device_id, meta.seq, meta.filename, meta.sha256, length, "receiving", now, now
        )
        self.index.add_upload(upload)
        self.uploads.create(upload.upload_id)
        self.audit.record("upload-create", device_id, target, "ok", upload_id=upload.upload_id, length=length)
        return Response(201, {**self._location(upload), "Upload-Offset": "0", **self._expires(now)})

    def _expires(self, active_utc_ns: int) -> dict[str, str]:
        """When an upload last active at ``active_utc_ns`` expires unless more of it arrives (tus
        expiration; docs/sync-protocol.md "Quotas")."""
        return expires_header(active_utc_ns + int(self.quotas.abandoned_after_s * NS_PER_S))

    @staticmethod
    def _location(upload: Upload) -> dict[str, str]:
        return {"Location": UPLOADS_PATH + upload.upload_id}

    def head(self, device_id: str, upload_id: str) -> Response:
        upload = self._own_upload(device_id, upload_id)
        meta = UploadMeta(upload.device_id, upload.seq, upload.filename, upload.sha256)
        h = {"Upload-Length": str(upload.length), "Cache-Control": "no-store", "Upload-Metadata": encode_metadata(meta)}
        if upload.state == "receiving":
            return Response(200, {**h, "Upload-Offset": str(self.uploads.size(upload_id)),
                                  **self._expires(upload.updated_utc_ns)})
        h["Upload-Offset"] = str(upload.length)
        if upload.state in OPEN_UPLOAD_STATES:
            return Response(200, {**h, INGEST_HEADER: "pending"})
        result = upload.result or {}
        if "receipt" in result:
            h["Bodycam-Receipt"] = str(result["receipt"])
        if "tlog" in result:
            h[TLOG_HEADER] = str(result["tlog"])
        if "error" in result:
            h["Bodycam-Quarantined"] = str(result["error"]["code"])
            notice = self._notice(upload)
            if notice is not None:
                h[QUARANTINE_HEADER] = notice
        return Response(200, h)

    def patch(
        self, device_id: str, upload_id: str, headers: Mapping[str, str], body: bytes,
        ingest_wait_s: float | None = None,
    ) -> Response:
        if (header(headers, "content-type") or "").split(";")[0].strip().lower() != OFFSET_CONTENT_TYPE:
            raise ApiError(415, "content-type", f"PATCH needs Content-Type: {OFFSET_CONTENT_TYPE}")
        offset = parse_uint(header(headers, "upload-offset"), "Upload-Offset")
        checksum = header(headers, "upload-checksum")
        expected = parse_checksum(checksum) if checksum is not None else None
        self._own_upload(device_id, upload_id)
        with self._lock_for(upload_id):
            upload = self._own_upload(device_id, upload_id)
            if upload.state != "receiving":
                if offset != upload.length or body:
                    raise ApiError(409, "completed", "the upload is complete", {"Upload-Offset": str(upload.length)})
            else:
                current = self.uploads.size(upload_id)
                if offset != current:
                    raise ApiError(
                        409, "offset-mismatch", f"the upload is at {current}", {"Upload-Offset": str(current)}
                    )
                if offset + len(body) > upload.length:
                    raise ApiError(400, "exceeds-length", f"the chunk goes past Upload-Length {upload.length}")
                if expected is not None and not expected.matches(body):
                    log.warning("checksum mismatch on upload %s at %d: chunk discarded", upload_id, offset)
                    raise ApiError(STATUS_CHECKSUM_MISMATCH, "checksum-mismatch",
                                   f"the chunk's {expected.algorithm} differs: discarded")
                new_offset = self.uploads.append(upload_id, offset, body) if body else current
                # Its last activity, which expiry of abandoned uploads goes by.
                touched_ns = self._now_ns()
                self.index.move_upload(upload_id, "receiving", "receiving", touched_ns)
                if new_offset < upload.length:
                    return Response(204, {"Upload-Offset": str(new_offset), **self._expires(touched_ns)})
                self.index.move_upload(upload_id, "receiving", "complete", self._now_ns())
                upload = self._own_upload(device_id, upload_id)
        # Every byte is held: the answer is the ingest's, waited for here outside the upload's lock.
        if upload.state not in OPEN_UPLOAD_STATES:
            return self._final_answer(upload)
        return self._await_ingest(upload, self._ingest.wait_s if ingest_wait_s is None else ingest_wait_s)

    @property
    def ingest_wait_s(self) -> float:
        """How long a completing PATCH waits for its ingest before answering pending."""
        return self._ingest.wait_s

    def collect(self, device_id: str, upload_id: str) -> Response:
        """The answer to a completed upload as it stands: the final one, or that ingest is pending."""
        upload = self._own_upload(device_id, upload_id)
        if upload.state not in OPEN_UPLOAD_STATES:
            return self._final_answer(upload)
        return Response(204, {"Upload-Offset": str(upload.length), INGEST_HEADER: "pending"})

    def _await_ingest(self, upload: Upload, wait_s: float) -> Response:
        """Queue a completed upload for ingest (unless it is already) and wait for its answer up
        to ``wait_s``; then answer that ingest is in progress (the unit asks again with HEAD). A
        full queue answers 503: the upload stays complete and is ingested later."""
        future = self.pool.pending(upload.upload_id)
        if future is None and upload.state == "complete":
            try:
                future = self.pool.submit(upload)
            except IngestBusy as exc:
                log.warning("upload %s complete, not queued: %s", upload.upload_id, exc)
                raise ApiError(
                    503, "ingest-busy", f"{exc}; the upload is complete and will be ingested: ask again later",
                    {"Retry-After": str(BUSY_RETRY_AFTER_S), "Upload-Offset": str(upload.length)},
                ) from None
        if future is not None and wait_s > 0:
            futures.wait([future], timeout=wait_s)  # done or not, the index says where it stands
        return self.collect(upload.device_id, upload.upload_id)

    def _notice(self, upload: Upload) -> str | None:
        """The signed quarantine notice of a quarantined upload, as a header value."""
        notice = (upload.result or {}).get("notice")
        if notice is None:
            # An upload quarantined by an older service kept none: signed again from its record.
            signed = self.ingestor.notice_for(upload)
            notice = None if signed is None else encode_receipt_header(signed)
        return None if notice is None else str(notice)

    def _final_answer(self, upload: Upload) -> Response:
        result = upload.result or {}
        if "receipt" in result:
            proof = {TLOG_HEADER: str(result["tlog"])} if "tlog" in result else {}
            return Response(204, {"Upload-Offset": str(upload.length), "Bodycam-Receipt": str(result["receipt"]),
                                  **proof})
        err = result.get("error", {"code": "quarantined", "message": "quarantined"})
        headers = {"Content-Type": "application/json", "Upload-Offset": str(upload.length)}
        # The unit quarantines its entry only on this signed notice.
        notice = self._notice(upload)
        if notice is not None:
            headers[QUARANTINE_HEADER] = notice
        return Response(422, headers, error_body(err["code"], err["message"]))

    def terminate(self, device_id: str, upload_id: str) -> Response:
        with self._lock_for(upload_id):
            upload = self._own_upload(device_id, upload_id)
            if upload.state != "receiving":
                raise ApiError(409, "completed", "a completed upload cannot be terminated (evidence is never deleted)")
            self.uploads.remove(upload_id)
            self.index.finish_upload(upload_id, "terminated", None, self._now_ns())
        self.audit.record("upload-terminate", device_id, f"{device_id}/{upload.seq}", "ok", upload_id=upload_id)
        return Response(204)

    # -- heartbeat --------------------------------------------------------------------------

    def heartbeat(self, device_id: str, body: bytes, seen_size: int | None = None) -> Response:
        key = self._public_key(device_id)
        if key is None:
            raise ApiError(401, "unauthorized", "the device is no longer enrolled")
        try:
            status = verify_heartbeat(body, key)
        except ReceiptError as exc:
            self.audit.record("heartbeat", device_id, device_id, "refused", reason=str(exc))
            raise ApiError(400, "bad-heartbeat", str(exc)) from exc
        now = self._now_ns()
        wait_s = self._heartbeat_limit.wait_s(device_id, now)
        if wait_s:
            raise ApiError(429, "too-many-heartbeats", f"at most one heartbeat every "
                           f"{self.quotas.heartbeat_interval_s:g} s: not stored", {"Retry-After": str(wait_s)})
        self.index.add_heartbeat(device_id, now, body, status)
        _tell(self.on_heartbeat, device_id, status, now)
        answer: dict[str, object] = {"ok": True, "server_utc_ns": now}
        if self.tlog is not None:
            try:
                view = self._log_heartbeat(device_id, body, status, now, seen_size)
            except TlogStoreError as exc:  # the heartbeat is kept; the unit asks again with the next
                log.error("heartbeat of %s not logged: %s", device_id, exc)
                view = None
            if view is not None:
                answer["tlog"] = encode_receipt_header(view)
        return json_response(200, answer)

    def _log_heartbeat(self, device_id: str, body: bytes, status: Mapping[str, object], now: int,
                       seen_size: int | None) -> bytes | None:
        """Log the heartbeat's chain head; the checkpoint units are shown, with a consistency
        proof from the size the unit last saw (docs/sync-protocol.md, "Transparency log")."""
        assert self.tlog is not None
        head = status.get("chain_head")
        if isinstance(head, dict) and isinstance(head.get("seq"), int) and isinstance(head.get("hash"), str):
            leaf = chain_head_leaf(device_id, int(head["seq"]), str(head["hash"]), body, now)
            self.tlog.append([Leaf("chain-head", device_id, int(head["seq"]), leaf)], now)
        signed = (self.tlog.cosigned() if self._units_see_cosigned else None) or self.tlog.checkpoint()
        if signed is None:
            return None  # nothing logged yet: nothing to show
        size = parse_checkpoint(split(signed)[0]).size
        seen = seen_size or 0
        proof = self.tlog.consistency(seen, size) if 0 < seen <= size else []
        return encode_consistency(seen, proof, signed)

    # -- requests from headquarters ---------------------------------------------------------

    def poll(self, device_id: str) -> Response:
        """What is due for the unit now (the HTTP layer holds an empty poll open and asks again)."""
        taken = self.requests.take(device_id)
        doc = {"requests": [encode_receipt_header(r) for r in taken], "server_utc_ns": self._now_ns()}
        return json_response(200, doc, {"Cache-Control": "no-store", REQUESTS_HEADER: str(len(taken))})

    def result(self, device_id: str, body: bytes) -> Response:
        """Keep the unit's signed result of a request (400 when it is not one)."""
        key = self._public_key(device_id)
        if key is None:
            raise ApiError(401, "unauthorized", "the device is no longer enrolled")
        try:
            result = self.requests.record_result(device_id, body, key)
        except RequestError as exc:
            raise ApiError(400, "bad-result", str(exc)) from exc
        return json_response(200, {"ok": True, "request_id": result["request_id"]})


def _signed_by(public_pem: str, method: str, target_uri: str, headers: Mapping[str, str], now_s: int) -> bool:
    """Whether the request's headers carry a valid, current signature by the key ``public_pem``
    (a revoked unit's): proof that its key is still in use, not merely its id claimed."""
    key = serialization.load_pem_public_key(public_pem.encode("ascii"))
    if not isinstance(key, ed25519.Ed25519PublicKey):
        return False
    try:
        verify_signed_headers(method, target_uri, headers, lambda _kid: key, now_s, lambda *_a: False)
    except SignatureError:
        return False
    return True


def _tell(listener: Callable[..., None] | None, *args: object) -> None:
    """Tell a listener; what it does (alerts, live updates) must never fail the unit's request."""
    if listener is None:
        return
    try:
        listener(*args)
    except Exception:
        log.exception("telling the operations room failed")


def _receipt(receipt: bytes, proof: bytes | None = None) -> dict[str, str]:
    h = {"Bodycam-Receipt": encode_receipt_header(receipt)}
    if proof is not None:
        h[TLOG_HEADER] = encode_receipt_header(proof)
    return h


__all__ = ["TUS_VERSION", "HqService", "Response", "Route"]
