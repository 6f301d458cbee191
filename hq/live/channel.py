"""Live view over the request channel: the adapter through which ``LiveService`` asks units to start
and stop their stream (``live.start``/``live.stop``; their parameter checks are in ``hq.requests.KINDS``).

How long a unit takes to hear of it: a unit keeps a signed poll open (``GET /v1/requests?wait_s=25``);
a request queued on the node holding that poll answers it at once, one queued on another node is
found on that node's next look at the index (``hq.longpoll.LOOK_EVERY_S``, 1 s). So a connected
unit hears within about a second plus a round trip. A unit whose poll is down (no coverage) retries
with backoff; a live request not fetched within :data:`REQUEST_TTL_S` is void (the viewer gave up
after ``LivePolicy.start_wait_s``), and the unit refuses it as expired if it comes later.
"""

from __future__ import annotations

from typing import Any

from hq.requests import UnitRequests

REQUEST_TTL_S = 30.0


class ChannelRequests:
    """:class:`hq.live.service.UnitChannel` over the request channel: each ask is a request signed
    by headquarters, audited (``unit-request``) with the operator and the viewer count; the unit
    records the operator as the request's ``requested_by`` pseudonym, never a name."""

    def __init__(self, requests: UnitRequests, ttl_s: float = REQUEST_TTL_S) -> None:
        self._requests = requests
        self._ttl_s = ttl_s

    def ask(self, device_id: str, kind: str, args: dict[str, Any], actor: str) -> None:
        viewers = args.get("viewers")
        reason = f"live view: {viewers} viewer(s)" if kind == "live.start" else \
            f"live view: stop ({args.get('reason')})"
        self._requests.queue(device_id, kind, args, actor, reason=reason, ttl_s=self._ttl_s)
