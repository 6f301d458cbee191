"""Live view's service at headquarters (no HTTP): units publish, viewers join and leave, all audited.

A unit publishes with WHIP (its signed offer becomes a Janus videoroom publisher); a viewer whose
role may watch asks to join a unit's stream: if the unit is not publishing, the service asks it to
(``live.start`` over the unit request channel, hq/live/channel.py, with the viewer count; the
channel names the operator by its pseudonym) and waits up to ``start_wait_s`` for its publication
to carry media; then the media server makes an offer
for that viewer alone, and the viewer's answer starts the forwarding. Viewers hold short-lived
tokens renewed by a keepalive; a token not renewed within ``token_ttl_s`` is a leave. When the
last viewer leaves the unit is told (``live.stop``, reason ``no-viewers``). Every publish, join,
refusal and leave is an audit record.

Thread contract: every method may be called from any thread (the ASGI layer's worker threads);
one lock guards the tables, never held across a call to the media server or the unit channel.
What this keeps in memory (publications, viewers) is lost with the node; a unit republishes on
its next request and viewers rejoin (docs/deployment-hq.md, "Live view").
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from hq.live.broker import BrokerError, MediaBroker, Publication, Subscription

VIEWER_ROLES = frozenset({"operator", "supervisor"})
MEDIA_POLL_S = 0.2  # how often a join asks the media server whether a new stream carries media yet
FIND_EVERY_S = 0.5  # how often a waiting join looks for a stream another node brokered
SUPERVISOR_ROLES = frozenset({"supervisor"})


class LiveError(Exception):
    """A live-view request refused or failed: ``status`` is the HTTP status a route answers with."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class UnitChannel(Protocol):
    """How the service asks a unit to start or stop (``hq.live.channel.ChannelRequests``: the
    request channel, signed requests the unit fetches itself)."""

    def ask(self, device_id: str, kind: str, args: dict[str, Any], actor: str) -> None: ...


class Audit(Protocol):
    def record(self, event_type: str, actor: str, target: str, outcome: str, **detail: Any) -> None: ...


@dataclass(frozen=True, slots=True)
class TurnSettings:
    """coturn with ``use-auth-secret``: credentials minted per viewer or unit, valid ``ttl_s``."""

    urls: tuple[str, ...]
    secret: str
    ttl_s: int = 3600


@dataclass(frozen=True, slots=True)
class LivePolicy:
    supervisors_only: bool = False
    token_ttl_s: float = 30.0  # a viewer's keepalive comes every 10 s
    start_wait_s: float = 20.0  # worst case of the unit channel's delay plus the unit's connect
    bitrate_bps: int = 800_000  # the room's ceiling: REMB to the unit


@dataclass(slots=True)
class Viewer:
    token: str
    user: str
    device_id: str
    sub: Subscription
    joined_ns: int
    expires_ns: int
    started: bool = False


@dataclass(frozen=True, slots=True)
class Grant:
    """What a viewer gets on joining: the token, the media server's offer, ICE servers."""

    token: str
    offer_sdp: str
    ice_servers: list[dict[str, Any]]
    expires_in_s: float


def turn_credentials(turn: TurnSettings, who: str, now_s: int) -> dict[str, Any]:
    """TURN REST credentials (draft-uberti-behave-turn-rest): username ``expiry:who``, HMAC-SHA1 password."""
    username = f"{now_s + turn.ttl_s}:{who}"
    password = base64.b64encode(hmac.new(turn.secret.encode(), username.encode(), hashlib.sha1).digest()).decode()
    return {"urls": list(turn.urls), "username": username, "credential": password}


class LiveService:
    def __init__(self, broker: MediaBroker, audit: Audit, requests: UnitChannel | None,
                 pseudonym: Callable[[str], str], policy: LivePolicy = LivePolicy(),
                 turn: TurnSettings | None = None, now_ns: Callable[[], int] = time.time_ns) -> None:
        """``pseudonym(user)``: the id the unit's chain records for an operator, the request
        channel's own (``hq.requests.UnitRequests.pseudonym``), so the chain, the request and the
        audit log name the same id."""
        self._broker = broker
        self._audit = audit
        self._requests = requests
        self._pseudonym = pseudonym
        self.policy = policy
        self._turn = turn
        self._now_ns = now_ns
        self._lock = threading.Lock()
        self._published = threading.Condition(self._lock)
        self._pubs: dict[str, Publication] = {}  # device -> its publication
        self._resources: dict[str, str] = {}  # WHIP resource id -> device
        self._viewers: dict[str, Viewer] = {}
        self._refused: dict[str, str] = {}  # device -> why it refused the live.start a join waits on
        self.node = secrets.token_hex(4)  # this process's tag on its viewer counts (nodes, workers)

    # -- units ----------------------------------------------------------------------------------

    def publish(self, device_id: str, offer_sdp: str) -> tuple[str, str]:
        """A unit's WHIP offer: (resource id, SDP answer). A unit already publishing replaces its
        stream (it reconnected)."""
        if not offer_sdp.startswith("v=0"):
            raise LiveError(400, "bad-sdp", "the body is not an SDP offer (it must start with v=0)")
        with self._lock:
            old = self._pubs.pop(device_id, None)
        if old is not None:
            self._broker.unpublish(old)
        try:
            pub, answer = self._broker.publish(device_id, offer_sdp, self.policy.bitrate_bps)
        except BrokerError as exc:
            self._audit.record("live-publish", device_id, device_id, "failed", reason=str(exc)[:200])
            raise LiveError(502, "media-server", f"the media server refused the stream: {exc}") from exc
        resource = secrets.token_urlsafe(18)
        with self._lock:
            self._pubs[device_id] = pub
            self._resources[resource] = device_id
            self._published.notify_all()
        self._audit.record("live-publish", device_id, device_id, "ok", resource=resource)
        return resource, answer

    def unpublish(self, device_id: str, resource: str) -> None:
        with self._lock:
            if self._resources.get(resource) != device_id:
                raise LiveError(404, "not-found", "no such live stream of this unit")
            del self._resources[resource]
            pub = self._pubs.pop(device_id, None)
            ending = [v for v in self._viewers.values() if v.device_id == device_id]
            for v in ending:
                del self._viewers[v.token]
        if pub is not None:
            self._broker.unpublish(pub)
        for v in ending:
            self._broker.unsubscribe(v.sub)
            self._audit.record("live-leave", v.user, device_id, "ok", reason="stream-ended",
                               watched_s=round((self._now_ns() - v.joined_ns) / 1e9, 1))
        self._audit.record("live-unpublish", device_id, device_id, "ok", viewers_dropped=len(ending))

    def unit_ice_servers(self, device_id: str) -> list[dict[str, Any]]:
        """TURN credentials for a unit's stream (sent with ``live.start``)."""
        if self._turn is None:
            return []
        return [turn_credentials(self._turn, device_id, self._now_ns() // 1_000_000_000)]

    # -- viewers --------------------------------------------------------------------------------

    def may_watch(self, roles: Iterable[str]) -> bool:
        allowed = SUPERVISOR_ROLES if self.policy.supervisors_only else VIEWER_ROLES
        return bool(allowed & set(roles))

    def join(self, user: str, roles: Iterable[str], device_id: str, known_unit: bool) -> Grant:
        """A viewer asks to watch ``device_id``: the media server's offer for them (blocking up to
        ``start_wait_s`` while the unit starts its stream)."""
        roles = frozenset(roles)
        if not self.may_watch(roles):
            self._audit.record("live-join", user, device_id, "refused", reason="role", roles=sorted(roles))
            who = "supervisors" if self.policy.supervisors_only else "operators and supervisors"
            raise LiveError(403, "forbidden", f"live view is for {who}")
        if not known_unit:
            self._audit.record("live-join", user, device_id, "refused", reason="unknown-unit")
            raise LiveError(404, "not-found", "no such unit")
        pub = self._publication_or_ask(user, device_id)
        self._wait_for_media(user, pub)
        try:
            sub = self._broker.subscribe(pub)
        except BrokerError as exc:
            self._audit.record("live-join", user, device_id, "failed", reason=str(exc)[:200])
            raise LiveError(502, "media-server", f"the media server could not add a viewer: {exc}") from exc
        now = self._now_ns()
        token = secrets.token_urlsafe(24)
        viewer = Viewer(token, user, device_id, sub, now, now + int(self.policy.token_ttl_s * 1e9))
        with self._lock:
            self._viewers[token] = viewer
            count = self._count(device_id)
        self._audit.record("live-join", user, device_id, "ok", viewers=count, pseudonym=self._pseudonym(user))
        self._tell_unit(device_id, "live.start", user, count)
        ice = [turn_credentials(self._turn, user, now // 1_000_000_000)] if self._turn else []
        return Grant(token, sub.offer_sdp, ice, self.policy.token_ttl_s)

    def _publication(self, device_id: str) -> Publication | None:
        """The unit's stream: published through this node, or found in the media server (another
        node brokered it: units' WHIP requests go to any node)."""
        with self._lock:
            pub = self._pubs.get(device_id)
        return pub if pub is not None else self._broker.find(device_id)

    def _publication_or_ask(self, user: str, device_id: str) -> Publication:
        pub = self._publication(device_id)
        if pub is not None:
            return pub
        if self._requests is None:
            self._audit.record("live-join", user, device_id, "failed", reason="not-streaming")
            raise LiveError(409, "not-streaming", "the unit is not streaming and no request channel is configured")
        with self._lock:
            count = self._count(device_id)
            self._refused.pop(device_id, None)
        self._tell_unit(device_id, "live.start", user, count + 1)
        deadline = time.monotonic() + self.policy.start_wait_s
        pub, refusal = None, None
        while pub is None and refusal is None:
            with self._lock:
                left = deadline - time.monotonic()
                if device_id not in self._pubs and device_id not in self._refused and left > 0:
                    # woken by a publish through this node; another node's is found by looking
                    self._published.wait(min(left, FIND_EVERY_S))
                refusal = self._refused.get(device_id)
            pub = self._publication(device_id)
            if pub is None and refusal is None and time.monotonic() >= deadline:
                break
        if pub is not None:
            refusal = None
        if refusal is not None:
            self._audit.record("live-join", user, device_id, "failed", reason="unit-refused", unit_said=refusal)
            raise LiveError(409, "unit-refused", f"the unit will not stream: {refusal}")
        if pub is None:
            self._audit.record("live-join", user, device_id, "failed", reason="unit-did-not-start")
            raise LiveError(504, "unit-silent", f"the unit did not start its stream within "
                                                f"{self.policy.start_wait_s:g} s (offline, or live view off)")
        return pub

    def _wait_for_media(self, user: str, pub: Publication) -> None:
        """A stream is a feed viewers can join only once its media connection is up (a unit that
        just answered a ``live.start`` has published its offer, not yet its media): wait for that,
        within ``start_wait_s``."""
        deadline = time.monotonic() + self.policy.start_wait_s
        while not self._broker.alive(pub):
            if time.monotonic() >= deadline:
                self._audit.record("live-join", user, pub.device_id, "failed", reason="no-media")
                raise LiveError(504, "unit-silent", f"the unit's stream carried no media within "
                                                    f"{self.policy.start_wait_s:g} s (check TURN)")
            time.sleep(MEDIA_POLL_S)

    def unit_answered(self, device_id: str, result: dict[str, Any]) -> None:
        """A unit's signed result of a request (``hq.requests.UnitRequests.result_listeners``): a
        refused or failed ``live.start`` ends the wait of the viewers asking for it at once."""
        if result.get("kind") != "live.start" or result.get("outcome") not in ("refused", "failed"):
            return
        detail = result.get("detail") or {}
        said = str(detail.get("reason") or detail.get("error") or result["outcome"])[:200]
        if "no handler for live.start" in said:
            said = "live view is off on this unit ([live] enabled = false)"
        with self._lock:
            self._refused[device_id] = said
            self._published.notify_all()

    def answer(self, user: str, token: str, answer_sdp: str) -> None:
        viewer = self._viewer(user, token)
        if not answer_sdp.startswith("v=0"):
            raise LiveError(400, "bad-sdp", "the body is not an SDP answer (it must start with v=0)")
        try:
            self._broker.start(viewer.sub, answer_sdp)
        except BrokerError as exc:
            raise LiveError(502, "media-server", f"the media server could not start the stream: {exc}") from exc
        with self._lock:
            viewer.started = True

    def keepalive(self, user: str, token: str) -> dict[str, Any]:
        viewer = self._viewer(user, token)
        with self._lock:
            viewer.expires_ns = self._now_ns() + int(self.policy.token_ttl_s * 1e9)
            count = self._count(viewer.device_id)
            streaming = viewer.device_id in self._pubs
        return {"viewers": count, "streaming": streaming, "expires_in_s": self.policy.token_ttl_s}

    def leave(self, user: str, token: str, reason: str = "left") -> None:
        viewer = self._viewer(user, token)
        self._drop([viewer], reason)

    def sweep(self) -> int:
        """Drop viewers whose token expired (no keepalive): each an audited leave."""
        now = self._now_ns()
        with self._lock:
            expired = [v for v in self._viewers.values() if v.expires_ns <= now]
        self._drop(expired, "expired")
        return len(expired)

    def _drop(self, viewers: list[Viewer], reason: str) -> None:
        for v in viewers:
            with self._lock:
                if self._viewers.pop(v.token, None) is None:
                    continue
                count = self._count(v.device_id)
            self._broker.unsubscribe(v.sub)
            self._audit.record("live-leave", v.user, v.device_id, "ok", reason=reason, viewers=count,
                               watched_s=round((self._now_ns() - v.joined_ns) / 1e9, 1))
            if count == 0:
                self._tell_unit(v.device_id, "live.stop", v.user, 0, reason="no-viewers")
            else:
                self._tell_unit(v.device_id, "live.start", v.user, count)

    def _viewer(self, user: str, token: str) -> Viewer:
        with self._lock:
            viewer = self._viewers.get(token)
        if viewer is None or not hmac.compare_digest(viewer.user, user) or viewer.expires_ns <= self._now_ns():
            raise LiveError(403, "bad-token", "this viewer token is unknown, expired or someone else's")
        return viewer

    def _count(self, device_id: str) -> int:
        return sum(1 for v in self._viewers.values() if v.device_id == device_id)

    def _tell_unit(self, device_id: str, kind: str, user: str, viewers: int, **extra: Any) -> None:
        if self._requests is None:
            return
        # the channel names who asked; ``node``: the unit adds up the counts of every node
        args: dict[str, Any] = {"viewers": viewers, "node": self.node, **extra}
        if kind == "live.start":
            args["ice_servers"] = self.unit_ice_servers(device_id)
        try:
            self._requests.ask(device_id, kind, args, user)
        except Exception as exc:  # the channel audits its own failures; a viewer still watches
            self._audit.record("live-request", user, device_id, "failed", kind=kind, reason=str(exc)[:200])

    def status(self, device_id: str) -> dict[str, Any]:
        """Whether the unit streams (through any node) and how many watch it through this node."""
        streaming = self._publication(device_id) is not None
        with self._lock:
            return {"streaming": streaming, "viewers": self._count(device_id)}

    def close(self) -> None:
        with self._lock:
            viewers, pubs = list(self._viewers.values()), list(self._pubs.values())
            self._viewers.clear()
            self._pubs.clear()
            self._resources.clear()
        for v in viewers:
            self._broker.unsubscribe(v.sub)
        for p in pubs:
            self._broker.unpublish(p)


def replace_policy(service: LiveService, **changes: Any) -> None:
    """For the command line and tests: change the policy of a running service."""
    service.policy = dataclasses.replace(service.policy, **changes)
