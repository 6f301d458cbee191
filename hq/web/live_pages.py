"""The live panel of the operations room: watch a unit's stream, for operators and supervisors.

The page (``/ops/live/UNIT``) joins through headquarters (``LiveService.join``): the server
checks the role again, asks the unit to stream if it is not, and hands the browser the media
server's offer, TURN credentials and a short-lived viewer token; the browser answers, renews the
token every 10 s and leaves when the page closes (or the token lapses). Every join and leave is
audited by the service; a refused join too.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from hq.live.service import LiveError, LiveService
from hq.web.context import WebContext
from hq.web.nav import NavItem
from hq.web.pages import render
from hq.web.roles import Role, context_of, current_user, require

WATCHERS = (Role.OPERATOR, Role.SUPERVISOR)
MAX_SDP_BYTES = 64 * 1024
NAV: tuple[NavItem, ...] = ()  # reached from the unit list and the map, not the nav


def _live(request: Request) -> LiveService:
    live = context_of(request).service.live
    if live is None:
        raise LiveError(503, "live-off", "live view is not configured on this headquarters (serve --janus-url)")
    return live


def _error(exc: LiveError) -> Response:
    return JSONResponse({"error": {"code": exc.code, "message": exc.message}}, exc.status,
                        headers={"Cache-Control": "no-store"})


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_SDP_BYTES:
        raise LiveError(413, "too-large", f"at most {MAX_SDP_BYTES} bytes")
    try:
        doc = json.loads(raw or b"{}")
    except ValueError as exc:
        raise LiveError(400, "bad-json", "the body is not JSON") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("token", ""), str):
        raise LiveError(400, "bad-json", "expected an object with a token")
    return doc


@require(*WATCHERS)
async def panel(request: Request) -> Response:
    ctx = context_of(request)
    device_id = request.path_params["device"]
    device = await run_in_threadpool(ctx.index.device, device_id)
    if device is None:
        return render(ctx, request, "error.html", 404, title="Not found", message="There is no such unit.")
    live = ctx.service.live
    return render(ctx, request, "live.html", title=f"Live: {device_id}", device_id=device_id,
                  configured=live is not None)


@require(*WATCHERS)
async def join(request: Request) -> Response:
    ctx = context_of(request)
    user = current_user(request)
    device_id = request.path_params["device"]
    try:
        live = _live(request)
        known = await run_in_threadpool(ctx.index.device, device_id) is not None
        grant = await run_in_threadpool(live.join, user.name, [str(r) for r in user.roles], device_id, known)
    except LiveError as exc:
        return _error(exc)
    return JSONResponse({"token": grant.token, "sdp": grant.offer_sdp, "ice_servers": grant.ice_servers,
                         "expires_in_s": grant.expires_in_s}, headers={"Cache-Control": "no-store"})


@require(*WATCHERS)
async def viewer(request: Request) -> Response:
    """``answer`` (the browser's SDP), ``keepalive``, ``leave``: for the holder of the token."""
    user = current_user(request)
    action = request.path_params["action"]
    try:
        live = _live(request)
        doc = await _body(request)
        token = doc.get("token", "")
        if action == "answer":
            sdp = doc.get("sdp")
            if not isinstance(sdp, str):
                raise LiveError(400, "bad-sdp", "expected the answer's sdp")
            await run_in_threadpool(live.answer, user.name, token, sdp)
            return JSONResponse({"ok": True})
        if action == "keepalive":
            return JSONResponse(await run_in_threadpool(live.keepalive, user.name, token))
        await run_in_threadpool(live.leave, user.name, token)
        return JSONResponse({"ok": True})
    except LiveError as exc:
        return _error(exc)


@require(*WATCHERS)
async def status(request: Request) -> Response:
    """The panel's side information: streaming, viewers, the unit's recording state (last heartbeat)."""
    ctx = context_of(request)
    device_id = request.path_params["device"]
    device = await run_in_threadpool(ctx.index.device, device_id)
    if device is None:
        return _error(LiveError(404, "not-found", "no such unit"))
    live = ctx.service.live
    doc: dict[str, Any] = live.status(device_id) if live is not None else {"streaming": False, "viewers": 0}
    recording = (device.last_status or {}).get("recording") or {}
    doc["recording_state"] = recording.get("state") if isinstance(recording, dict) else None
    doc["last_heartbeat_utc_ns"] = device.last_heartbeat_utc_ns
    return JSONResponse(doc, headers={"Cache-Control": "no-store"})


def routes(ctx: WebContext) -> list[BaseRoute]:
    return [
        Route("/live/{device}", panel, methods=["GET", "HEAD"]),
        Route("/live/{device}/join", join, methods=["POST"]),
        Route("/live/{device}/status", status, methods=["GET"]),
        Route("/live-viewer/{action}", viewer, methods=["POST"]),
    ]
