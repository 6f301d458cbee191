"""Requests from headquarters to units (docs/sync-protocol.md, "Requests from headquarters"),
independent of HTTP: queue a signed request for a unit (audited), hand a unit's poll what is due,
keep the unit's signed result (audited).

A kind is one entry of :data:`KINDS`: its name and a pure check of its parameters that returns
them normalised (or raises :class:`RequestError` with one line saying what is wrong). Adding a
kind at headquarters is that one line; on the unit it is one handler registration
(``agent.sync.requests.RequestHandlers.register``).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.evidence.hqrequest import KIND, RequestDocError, make_request, open_result, request_sha256
from hq.audit import Auditor
from hq.index import Index
from hq.records import UnitRequest

log = logging.getLogger(__name__)

NS_PER_S = 1_000_000_000
DEFAULT_TTL_S = 24 * 3600  # a unit offline for a shift still gets it at the dock
MAX_TTL_S = 7 * 24 * 3600
REDELIVER_S = 300.0  # a delivered request without a result is handed out again after this
MAX_PER_POLL = 16
MAX_REASON = 500  # characters

ParamsCheck = Callable[[Mapping[str, Any]], dict[str, Any]]


class RequestError(Exception):
    """A request headquarters will not queue, or a result it will not keep: the message says why."""


def check_background_upload(params: Mapping[str, Any]) -> dict[str, Any]:
    """``background.upload``: ``{"from_utc_ns": int, "to_utc_ns": int}``, a range of the unit's
    background recording to upload as evidence (a reason is the request's, not a parameter)."""
    if set(params) != {"from_utc_ns", "to_utc_ns"}:
        raise RequestError("background.upload takes from_utc_ns and to_utc_ns")
    start, end = params["from_utc_ns"], params["to_utc_ns"]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (start, end)):
        raise RequestError("background.upload: from_utc_ns and to_utc_ns are times in ns since 1970")
    if end <= start:
        raise RequestError("background.upload: --to must be after --from")
    return {"from_utc_ns": start, "to_utc_ns": end}


LIVE_MAX_VIEWERS = 10_000
LIVE_MAX_ICE_SERVERS = 4
LIVE_STOP_REASONS = ("no-viewers", "requested")
_ICE_SCHEMES = ("stun", "turn", "turns")
LIVE_NODE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


def _live_viewers(kind: str, params: Mapping[str, Any]) -> int:
    v = params.get("viewers")
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= LIVE_MAX_VIEWERS:
        raise RequestError(f"{kind}: viewers is a count from 0 to {LIVE_MAX_VIEWERS}")
    return v


def _ice_server(server: Any) -> dict[str, Any]:
    if not isinstance(server, Mapping) or not set(server) <= {"urls", "username", "credential"}:
        raise RequestError("live.start: each ICE server is {urls, username, credential}")
    urls = server.get("urls")
    urls = [urls] if isinstance(urls, str) else urls
    if not isinstance(urls, list) or not 0 < len(urls) <= LIVE_MAX_ICE_SERVERS or not all(
            isinstance(u, str) and u.split(":", 1)[0] in _ICE_SCHEMES and len(u) < 256 for u in urls):
        raise RequestError("live.start: an ICE server's urls are stun:, turn: or turns: URLs")
    user, cred = server.get("username", ""), server.get("credential", "")
    if not isinstance(user, str) or not isinstance(cred, str) or len(user) > 200 or len(cred) > 200:
        raise RequestError("live.start: an ICE server's username and credential are short text")
    return {"urls": list(urls), "username": user, "credential": cred}


def check_live_start(params: Mapping[str, Any]) -> dict[str, Any]:
    """``live.start``: ``{"viewers": int, "ice_servers": [{"urls": [...], "username", "credential"}]}``:
    a viewer wants the unit's live stream (hq/live/); the TURN credentials are the unit's, for this stream."""
    if "viewers" not in params or not set(params) <= {"viewers", "ice_servers", "node"}:
        raise RequestError("live.start takes viewers and, optionally, ice_servers and node")
    ice = params.get("ice_servers", [])
    if not isinstance(ice, list) or len(ice) > LIVE_MAX_ICE_SERVERS:
        raise RequestError(f"live.start: ice_servers is a list of at most {LIVE_MAX_ICE_SERVERS} servers")
    return {"viewers": _live_viewers("live.start", params), "ice_servers": [_ice_server(s) for s in ice],
            **_live_node("live.start", params)}


def check_live_stop(params: Mapping[str, Any]) -> dict[str, Any]:
    """``live.stop``: ``{"viewers": int, "reason": "no-viewers" | "requested", "node"?: str}``."""
    if not {"viewers", "reason"} <= set(params) <= {"viewers", "reason", "node"} or \
            params["reason"] not in LIVE_STOP_REASONS:
        raise RequestError(f"live.stop takes viewers, a reason ({', '.join(LIVE_STOP_REASONS)}) and, "
                           "optionally, node")
    return {"viewers": _live_viewers("live.stop", params), "reason": params["reason"],
            **_live_node("live.stop", params)}


def _live_node(kind: str, params: Mapping[str, Any]) -> dict[str, str]:
    """``node``: which headquarters process counts these viewers (the unit adds up every node's)."""
    if "node" not in params:
        return {}
    node = params["node"]
    if not isinstance(node, str) or not LIVE_NODE.match(node):
        raise RequestError(f"{kind}: node is 1 to 32 letters, digits, '-' or '_'")
    return {"node": node}


# The kinds headquarters may send, each with its parameter check. One line per kind.
KINDS: dict[str, ParamsCheck] = {
    "background.upload": check_background_upload,
    "live.start": check_live_start,  # live view (hq/live/channel.py): a viewer wants the stream
    "live.stop": check_live_stop,  # the last viewer left, or an operator ended it
}


@dataclass(frozen=True, slots=True)
class Delivery:
    """How often units' polls come back for their requests."""

    redeliver_s: float = REDELIVER_S
    max_per_poll: int = MAX_PER_POLL


def pseudonym(hq_key: ed25519.Ed25519PrivateKey, actor: str) -> str:
    """The id a unit sees for the person who asked (stable per person, meaningless without
    headquarters' audit log): HMAC-SHA-256 of the name, keyed by headquarters' receipt key."""
    secret = hq_key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                  serialization.NoEncryption())
    mac = hmac.new(hashlib.sha256(b"bodycam/v1/pseudonym\x00" + secret).digest(), actor.encode(), hashlib.sha256)
    return "p-" + mac.hexdigest()[:24]


class UnitRequests:
    """Queues requests for units and keeps their results. Thread-safe (the index serialises
    writes). ``on_queued(device_id)`` is called after a request is queued, so a poll this node
    holds open for that unit answers at once (other nodes find it on their next look)."""

    def __init__(
        self,
        index: Index,
        hq_key: ed25519.Ed25519PrivateKey,
        audit: Auditor,
        now_ns: Callable[[], int],
        kinds: Mapping[str, ParamsCheck] | None = None,
        delivery: Delivery | None = None,
    ) -> None:
        self._index = index
        self._hq_key = hq_key
        self._audit = audit
        self._now_ns = now_ns
        self.kinds = dict(KINDS if kinds is None else kinds)
        self.delivery = delivery or Delivery()
        self.on_queued: Callable[[str], None] = lambda device_id: None
        # told (device_id, the result's fields) after a unit's result is kept: live view stops
        # waiting for a unit that refused to stream. Called on the request's thread; must not raise.
        self.result_listeners: list[Callable[[str, dict[str, Any]], None]] = []

    def pseudonym(self, actor: str) -> str:
        """The id the unit is told for ``actor`` (``requested_by`` of their requests)."""
        return pseudonym(self._hq_key, actor)

    def queue(
        self, device_id: str, kind: str, params: Mapping[str, Any], actor: str, reason: str,
        ttl_s: float = DEFAULT_TTL_S,
    ) -> UnitRequest:
        """Sign and queue a request for ``device_id`` on behalf of ``actor`` (audited with the
        reason, whatever the outcome); RequestError when it cannot be sent."""
        target = device_id
        try:
            checked = self._check(device_id, kind, params, reason, ttl_s)
        except RequestError as exc:
            self._audit.record("unit-request", actor, target, "refused", kind=kind, reason=reason[:MAX_REASON],
                               refusal=str(exc))
            raise
        now = self._now_ns()
        request_id, requested_by = secrets.token_hex(16), self.pseudonym(actor)
        expires = now + int(ttl_s * NS_PER_S)
        signed = make_request({
            "request_id": request_id, "device_id": device_id, "kind": kind, "params": checked,
            "issued_utc_ns": now, "expires_utc_ns": expires, "requested_by": requested_by,
        }, self._hq_key)
        request = UnitRequest(request_id=request_id, device_id=device_id, kind=kind, params=checked,
                              requested_by=requested_by, issued_utc_ns=now, expires_utc_ns=expires, signed=signed)
        # Audited first: a request that cannot be audited is not sent.
        self._audit.record("unit-request", actor, target, "ok", request_id=request.request_id, kind=kind,
                           params=checked, reason=reason, requested_by=request.requested_by,
                           expires_utc_ns=request.expires_utc_ns)
        self._index.add_request(request)
        self.on_queued(device_id)
        return request

    def _check(self, device_id: str, kind: str, params: Mapping[str, Any], reason: str, ttl_s: float) -> dict[str, Any]:
        check = self.kinds.get(kind)
        if check is None or not KIND.match(kind):
            raise RequestError(f"no request kind {kind!r}: headquarters sends {', '.join(sorted(self.kinds))}")
        if not reason.strip():
            raise RequestError("give a reason: it is kept in the audit log with the request")
        if len(reason) > MAX_REASON:
            raise RequestError(f"the reason is longer than {MAX_REASON} characters")
        if not 0 < ttl_s <= MAX_TTL_S:
            raise RequestError(f"a request lives from 1 s to {MAX_TTL_S // 86400} days")
        device = self._index.device(device_id)
        if device is None or not device.active:
            raise RequestError(f"{device_id} is not an enrolled unit (or it was revoked)")
        return check(params)

    # -- the unit's side --------------------------------------------------------------------

    def take(self, device_id: str) -> list[bytes]:
        """The signed requests due for ``device_id`` (marked delivered); empty when none."""
        now = self._now_ns()
        redeliver_before = now - int(self.delivery.redeliver_s * NS_PER_S)
        return self._index.take_requests(device_id, now, redeliver_before, self.delivery.max_per_poll)

    def due_among(self, device_ids: list[str]) -> set[str]:
        """Which of these units have a request to take now."""
        now = self._now_ns()
        return self._index.devices_with_requests(device_ids, now, now - int(self.delivery.redeliver_s * NS_PER_S))

    def record_result(self, device_id: str, body: bytes, device_key: ed25519.Ed25519PublicKey) -> dict[str, Any]:
        """Keep a unit's signed result of one of its requests (audited); the result's fields.
        RequestError when the body is not a result that unit signed for a request of its own."""
        try:
            result = open_result(body, device_key)
        except RequestDocError as exc:
            self._audit.record("unit-request-result", device_id, device_id, "refused", refusal=str(exc))
            raise RequestError(str(exc)) from exc
        request_id = result["request_id"]
        request = self._index.request(request_id)
        detail = {"request_id": request_id, "kind": result["kind"], "result": result["outcome"],
                  "detail": result["detail"]}
        if result["device_id"] != device_id or request is None or request.device_id != device_id:
            # A unit refusing a request that was not headquarters' (forged, or for another unit)
            # names an id headquarters never issued to it: kept in the audit log only.
            self._audit.record("unit-request-result", device_id, device_id,
                               "refused" if result["outcome"] == "refused" else "failed",
                               unknown_request=True, **detail)
            if result["outcome"] == "refused":
                return result
            raise RequestError(f"request {request_id} is not one headquarters sent to {device_id}")
        if result["request_sha256"] != request_sha256(request.signed):
            self._audit.record("unit-request-result", device_id, device_id, "refused", other_bytes=True, **detail)
            if result["outcome"] == "refused":
                return result
            raise RequestError(f"the result names other bytes than request {request_id} as signed")
        fresh = self._index.answer_request(request_id, result["outcome"], body, self._now_ns())
        outcome = "ok" if result["outcome"] in ("done", "partial") else "failed"
        self._audit.record("unit-request-result", device_id, device_id, outcome if fresh else "duplicate", **detail)
        if fresh:
            for listener in self.result_listeners:
                try:
                    listener(device_id, result)
                except Exception:
                    log.exception("a listener of request results failed (%s)", request_id)
        return result
