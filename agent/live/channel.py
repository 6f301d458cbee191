"""Live view's requests from headquarters (``live.start``, ``live.stop``) as handlers of the unit's
request channel (agent/sync/requests.py)."""

from __future__ import annotations

from agent.live.controller import LiveController, LiveRequestError
from agent.sync.requests import Handler, HqRequest, Outcome

KINDS = ("live.start", "live.stop")


def live_handlers(controller: LiveController) -> dict[str, Handler]:
    """One handler per kind. The controller decides at once (the stream connects on its own
    thread), so the handler returns within the channel's few seconds; the result says whether the
    unit streams. The operator is the request's pseudonymous ``requested_by``, never a name."""

    def handle(request: HqRequest) -> Outcome:
        try:
            status = controller.request(request.kind, {**request.params, "operator": request.requested_by})
        except LiveRequestError as exc:
            return Outcome("refused", {"reason": str(exc)[:200]})
        return Outcome("done", {"streaming": status["streaming"], "viewers": status["viewers"]})

    return {kind: handle for kind in KINDS}
