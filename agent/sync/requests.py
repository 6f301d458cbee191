"""Requests from headquarters (docs/sync-protocol.md, "Requests from headquarters"): the unit keeps
a signed poll open (``GET /v1/requests?wait_s=25``), checks each request headquarters hands it
(signed by the pinned receipt key, for this unit, not expired, not seen before), runs the handler
registered for its kind, and sends back its signed result.

The decision is pure (:func:`judge`); :class:`RequestChannel` is the thread around it, with its
own connection to headquarters (the sync worker's is busy with uploads). Adding a kind on the
unit is one :meth:`RequestHandlers.register` call where the unit is wired (``agent/running.py``).
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.backoff import Backoff
from agent.evidence import canonical
from agent.evidence.format import SIGNATURE_LEN
from agent.evidence.hqrequest import KIND, REQUEST_ID, RequestDocError, make_result, open_request, request_sha256
from agent.store import Store
from agent.sync.client import HqClient
from agent.sync.errors import ProtocolError, SyncError
from agent.textsafe import safe_text
from hal.clock import Clock
from hal.keystore import KeyStore

log = logging.getLogger(__name__)

ACTOR = "hq-requests"
POLL_WAIT_S = 25  # headquarters holds a poll at most this long (hq/longpoll.py, MAX_WAIT_S)
MAX_DETAIL_TEXT = 200


@dataclass(frozen=True, slots=True)
class HqRequest:
    """A request that passed every check: signed by headquarters, for this unit, in date, new."""

    request_id: str
    kind: str
    params: dict[str, Any]
    issued_utc_ns: int
    expires_utc_ns: int
    requested_by: str  # headquarters' pseudonymous id of the person who asked
    sha256: str  # of the signed bytes, which the result names


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a handler did: ``done``, ``partial`` (what it could: ``detail`` says what), ``refused``
    or ``failed``, and a small JSON object for headquarters (signed with the result)."""

    outcome: str
    detail: dict[str, Any] = field(default_factory=dict)


Handler = Callable[[HqRequest], Outcome]


class RequestHandlers:
    """Handlers by kind. Contract: a handler runs on the ``hq-requests`` thread, returns within a
    few seconds (long work goes to the thread that owns it: the recorder, the sync worker) and
    raises only for the unexpected (answered ``failed``)."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def register(self, kind: str, handler: Handler) -> None:
        if not KIND.match(kind):
            raise ValueError(f"request kind {kind!r}: dotted lower-case names (background.upload)")
        if kind in self._handlers:
            raise ValueError(f"request kind {kind!r} already has a handler")
        self._handlers[kind] = handler

    def get(self, kind: str) -> Handler | None:
        return self._handlers.get(kind)

    @property
    def kinds(self) -> list[str]:
        return sorted(self._handlers)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with one request's bytes: act (``request`` set) or answer ``refusal`` at once.
    ``request_id``/``kind`` name it for the result and the audit log (for a refused request they
    are what it claims, if readable: None when there is nothing to answer to)."""

    request: HqRequest | None
    refusal: str | None
    request_id: str | None
    kind: str | None
    signed: bool = True  # False: not headquarters' signature (nothing it claims is trusted)


def _claimed(data: bytes) -> tuple[str | None, str | None]:
    """The id and kind an unverified request claims, only if well formed (for a refusal's answer)."""
    try:
        doc = canonical.loads(data[:-SIGNATURE_LEN])
    except (canonical.CanonicalError, ValueError, TypeError):
        return None, None
    if not isinstance(doc, dict):
        return None, None
    rid, kind = doc.get("request_id"), doc.get("kind")
    return (rid if isinstance(rid, str) and REQUEST_ID.match(rid) else None,
            kind if isinstance(kind, str) and KIND.match(kind) else None)


def judge(data: bytes, hq_key: ed25519.Ed25519PublicKey, device_id: str, now_utc_ns: int,
          kinds: list[str]) -> Verdict:
    """Check one request (pure): headquarters' signature, this unit, not expired, a kind with a
    handler. Whether it was seen before is the caller's (the store)."""
    try:
        doc = open_request(data, hq_key)
    except RequestDocError as exc:
        rid, kind = _claimed(data)
        return Verdict(None, f"not signed by headquarters: {exc}", rid, kind, signed=False)
    rid, kind = str(doc["request_id"]), str(doc["kind"])
    if doc["device_id"] != device_id:
        return Verdict(None, "the request is for another unit", rid, kind)
    if now_utc_ns >= doc["expires_utc_ns"]:
        return Verdict(None, "the request expired before the unit got it", rid, kind)
    if kind not in kinds:
        return Verdict(None, f"this unit has no handler for {kind}", rid, kind)
    request = HqRequest(rid, kind, dict(doc["params"]), int(doc["issued_utc_ns"]), int(doc["expires_utc_ns"]),
                        str(doc["requested_by"]), request_sha256(data))
    return Verdict(request, None, rid, kind)


class RequestChannel:
    """The ``hq-requests`` thread: polls headquarters, checks and dispatches requests, answers.

    Every request taken is audited in the unit's log (acted on or refused) and answered with a
    result signed by the device key, kept in the store before it is sent, so a request delivered
    again (headquarters did not get the answer) is answered from the store, never run twice.
    Thread contract: ``start``, ``stop`` and ``get_status`` from any thread; the rest on its own.
    ``client`` makes its connection to headquarters (its own: the sync worker's carries uploads).
    """

    def __init__(self, client: Callable[[], HqClient], store: Store, keystore: KeyStore, device_id: str,
                 hq_key: ed25519.Ed25519PublicKey, clock: Clock, handlers: RequestHandlers,
                 backoff: Backoff | None = None, rng: random.Random | None = None) -> None:
        self._make_client = client  # made on first use: a CA provisioned later needs no restart
        self._conn: HqClient | None = None
        self._store = store
        self._keystore = keystore
        self._device_id = device_id
        self._hq_key = hq_key
        self._clock = clock
        self.handlers = handlers
        self._backoff = backoff or Backoff(1.0, 300.0)
        self._rng = rng or random.Random()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hq-requests", daemon=True)
        self._lock = threading.Lock()
        self._status: dict[str, Any] = {"taken": 0, "refused": 0, "last_error": None}

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        conn = self._conn
        if conn is not None:
            conn.abort()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        if self._conn is not None:
            self._conn.close()

    @property
    def _client(self) -> HqClient:
        if self._conn is None:
            self._conn = self._make_client()
        return self._conn

    def get_status(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._status)

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self.run_once(POLL_WAIT_S)
                failures = 0
                self._set(last_error=None)
            except SyncError as exc:
                failures += 1
                wait_s = self._backoff.delay_s(failures, self._rng)
                self._set(last_error=safe_text(str(exc))[:MAX_DETAIL_TEXT])
                log.info("requests from headquarters: %s; asking again in %.0f s", safe_text(str(exc)), wait_s)
                self._stop.wait(wait_s)
            except Exception:
                failures += 1
                log.exception("requests from headquarters: unexpected failure")
                self._stop.wait(self._backoff.delay_s(failures, self._rng))

    def run_once(self, wait_s: int) -> int:
        """Send results headquarters has not taken, then one poll; returns how many requests came."""
        self.send_results()
        taken = self._client.poll_requests(wait_s)
        for data in taken:
            self.take(data)
        self.send_results()
        return len(taken)

    def send_results(self) -> None:
        for request_id, body in self._store.unposted_hq_results():
            try:
                self._client.post_result(body)
            except ProtocolError as exc:
                if exc.status != 400:
                    raise
                # headquarters will never keep it (not a request it sent us): kept here, not resent
                log.warning("headquarters refused the result of %s: %s", request_id, safe_text(str(exc)))
            self._store.hq_result_posted(request_id)

    def take(self, data: bytes) -> None:
        """Check, dispatch and answer one request's bytes."""
        now = self._clock.utc_ns()
        verdict = judge(data, self._hq_key, self._device_id, now, self.handlers.kinds)
        rid, kind = verdict.request_id, verdict.kind
        if verdict.signed and rid is not None and self._store.hq_request_result(rid) is not None:
            log.info("request %s came again: answered from the kept result", rid)
            self._store.audit(ACTOR, "hq-request", rid, "ok", kind=kind, repeated=True)
            return  # its result is sent (again, if headquarters never took it) by send_results
        if verdict.request is None:
            self._refuse(data, verdict, now)
            return
        request = verdict.request
        handler = self.handlers.get(request.kind)
        assert handler is not None  # judge checked
        try:
            outcome = handler(request)
        except Exception as exc:  # noqa: BLE001 - a handler's failure is the request's, not the channel's
            log.exception("request %s (%s) failed", request.request_id, request.kind)
            outcome = Outcome("failed", {"error": safe_text(f"{type(exc).__name__}: {exc}")[:MAX_DETAIL_TEXT]})
        self._answer(request.request_id, request.kind, request.sha256, request.expires_utc_ns, outcome)
        self._store.audit(ACTOR, "hq-request", request.request_id, "ok" if outcome.outcome != "failed" else "failed",
                          kind=request.kind, params=request.params, requested_by=request.requested_by,
                          result=outcome.outcome, detail=outcome.detail)
        with self._lock:
            self._status["taken"] += 1

    def _refuse(self, data: bytes, verdict: Verdict, now: int) -> None:
        refusal = verdict.refusal or "refused"
        log.warning("request %s refused: %s", verdict.request_id or "(unreadable)", safe_text(refusal))
        self._store.audit(ACTOR, "hq-request", verdict.request_id or "-", "refused", kind=verdict.kind,
                          reason=refusal[:MAX_DETAIL_TEXT], request_sha256=request_sha256(data))
        with self._lock:
            self._status["refused"] += 1
        if verdict.request_id is None or verdict.kind is None:
            return  # nothing headquarters could match an answer to
        outcome = Outcome("refused", {"reason": refusal[:MAX_DETAIL_TEXT]})
        body = self._result(verdict.request_id, verdict.kind, request_sha256(data), outcome)
        if verdict.signed:
            self._store.keep_hq_request(verdict.request_id, verdict.kind, now, outcome.outcome, body)
            return
        # Not kept under the id it claims: a forgery must not stand in for the genuine request
        # with that id. Told to headquarters once, so its audit log shows it too.
        try:
            self._client.post_result(body)
        except SyncError as exc:
            log.info("could not tell headquarters of the refused request: %s", safe_text(str(exc)))

    def _result(self, request_id: str, kind: str, sha256: str, outcome: Outcome) -> bytes:
        return make_result({
            "request_id": request_id, "device_id": self._device_id, "kind": kind, "request_sha256": sha256,
            "outcome": outcome.outcome, "detail": outcome.detail, "finished_utc_ns": self._clock.utc_ns(),
        }, self._keystore)

    def _answer(self, request_id: str, kind: str, sha256: str, expires_utc_ns: int, outcome: Outcome) -> None:
        body = self._result(request_id, kind, sha256, outcome)
        self._store.keep_hq_request(request_id, kind, expires_utc_ns, outcome.outcome, body)

    def _set(self, **values: Any) -> None:
        with self._lock:
            self._status.update(values)
