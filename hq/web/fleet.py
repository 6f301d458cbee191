"""The map, the units, their alerts and the live stream of the operations room (operator and
supervisor roles). Thin over ``hq.ops.OpsService``: parse, check the role, call, render.

Positions are shown only to these roles, and every view of one is audited (``hq/ops.py``): the
map's snapshot and each unit page at once, a live stream once a minute at most for the units it
showed for the first time. The stream ends when the session does (checked every few seconds
without extending it), when the server stops, or when the browser falls behind.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from hq.accounts.records import Role
from hq.ops import OpsError
from hq.ops_room import OpsRoom
from hq.web.context import PREFIX, WebContext
from hq.web.nav import NavItem
from hq.web.pages import render
from hq.web.roles import context_of, current_user, require, session_cookie

SEES_POSITIONS = (Role.OPERATOR, Role.SUPERVISOR)
NAV = (
    NavItem("Map", "/map", frozenset(SEES_POSITIONS), "Every unit at its last position, live"),
    NavItem("Units", "/units", frozenset(SEES_POSITIONS), "Each unit's state, battery, storage and sync"),
    NavItem("Alerts", "/alerts", frozenset(SEES_POSITIONS), "Alerts raised by units, to acknowledge"),
)
STREAM_WAIT_S = 5.0  # the longest a stream waits for events before it checks its session again
STREAM_AUDIT_S = 60.0  # a stream's newly shown positions are audited at most this often
KEEPALIVE_S = 15.0


def iso_utc(at_ns: int | None) -> str:
    """``2026-12-03 10:20:05 UTC``: how the operations room writes a time."""
    if at_ns is None:
        return "–"
    return dt.datetime.fromtimestamp(at_ns / 1e9, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _room(ctx: WebContext) -> OpsRoom:
    room = ctx.ops
    if room is None:
        raise RuntimeError("this server was built without the operations room")
    return room


def may_watch_live(ctx: WebContext, request: Request) -> bool:
    """Whether to offer "Watch live": this node brokers live view and the user's roles may watch
    (operators and supervisors, or supervisors only; the live panel checks again on the server)."""
    live = ctx.service.live
    return live is not None and live.may_watch(str(r) for r in current_user(request).roles)


# -- pages -------------------------------------------------------------------------------------

@require(*SEES_POSITIONS)
async def map_page(request: Request) -> Response:
    ctx = context_of(request)
    info = _room(ctx).tiles.info
    return render(ctx, request, "fleet_map.html", title="Map", basemap=info,
                  no_contact_s=int(_room(ctx).ops.policy.no_contact_s), watch=may_watch_live(ctx, request))


@require(*SEES_POSITIONS)
async def units_page(request: Request) -> Response:
    ctx = context_of(request)
    units = await run_in_threadpool(_room(ctx).ops.units, current_user(request).name, positions=False,
                                    context="units")
    return render(ctx, request, "fleet_units.html", title="Units", units=units, now_ns=ctx.now_ns(),
                  watch=may_watch_live(ctx, request))


@require(*SEES_POSITIONS)
async def unit_page(request: Request) -> Response:
    ctx = context_of(request)
    device_id = request.path_params["device_id"]
    try:
        page = await run_in_threadpool(_room(ctx).ops.unit, current_user(request).name, device_id, positions=True)
    except OpsError:
        return render(ctx, request, "error.html", 404, title="Not found", message="There is no such unit.")
    return render(ctx, request, "fleet_unit.html", title=f"Unit {device_id}", unit=page, now_ns=ctx.now_ns(),
                  basemap=_room(ctx).tiles.info, iso=iso_utc, watch=may_watch_live(ctx, request))


@require(*SEES_POSITIONS)
async def alerts_page(request: Request) -> Response:
    ctx = context_of(request)
    alerts = await run_in_threadpool(_room(ctx).ops.alert_list, 200)
    done = request.query_params.get("done", "")
    return render(ctx, request, "fleet_alerts.html", title="Alerts", alerts_dicts=[a.as_dict() for a in alerts],
                  standing=[a for a in alerts if a.standing], done=done if done.isdigit() else "",
                  problem=bool(request.query_params.get("problem")), iso=iso_utc)


@require(*SEES_POSITIONS)
async def acknowledge(request: Request) -> Response:
    ctx = context_of(request)
    wants_json = "application/json" in request.headers.get("accept", "")
    try:
        alert_id = int(request.path_params["alert_id"])
        done = await run_in_threadpool(_room(ctx).ops.acknowledge, current_user(request).name, alert_id)
    except (ValueError, OpsError) as exc:
        if wants_json:
            return JSONResponse({"error": {"code": "not-acknowledged", "message": str(exc)}}, status_code=409)
        return RedirectResponse(f"{PREFIX}/alerts?problem=not-acknowledged", status_code=303)
    if wants_json:
        return JSONResponse({"alert": done.as_dict()})
    return RedirectResponse(f"{PREFIX}/alerts?done={done.id}", status_code=303)


# -- data for the map's script -----------------------------------------------------------------

@require(*SEES_POSITIONS)
async def units_json(request: Request) -> Response:
    ctx = context_of(request)
    units = await run_in_threadpool(_room(ctx).ops.units, current_user(request).name, positions=True, context="map")
    return JSONResponse({"units": units, "now_utc_ns": ctx.now_ns()})


@require()
async def tile(request: Request) -> Response:
    """A basemap tile (any signed-in user: tiles show no unit)."""
    ctx = context_of(request)
    try:
        z, x, y = (int(request.path_params[k]) for k in ("z", "x", "y"))
    except ValueError:
        return Response(status_code=404)
    data = await run_in_threadpool(_room(ctx).tiles.tile, z, x, y)
    if data is None:
        return Response(status_code=404)
    return Response(data, media_type=_room(ctx).tiles.info.content_type,
                    headers={"Cache-Control": "private, max-age=86400"})


@require(*SEES_POSITIONS)
async def events(request: Request) -> Response:
    """Server-sent events: ``unit`` (a unit's summary, its position included) and ``alert``
    changes; ``resync`` tells the page to fetch the snapshot again; ``end`` says why the stream
    stopped (signed out, timed out, server stopping)."""
    ctx = context_of(request)
    room = _room(ctx)
    user = current_user(request).name
    cookie = request.cookies.get(session_cookie(ctx), "")
    sub = room.bus.subscribe(asyncio.get_running_loop())

    async def stream() -> AsyncIterator[str]:
        shown: set[str] = set()
        unaudited: set[str] = set()
        audited_at = time.monotonic()
        quiet_since = time.monotonic()
        try:
            yield "retry: 3000\n\n"
            while True:
                batch = await sub.get(STREAM_WAIT_S)
                if sub.overflowed:
                    yield _sse("resync", {"reason": "this browser fell behind"})
                    return
                if sub.closed:
                    yield _sse("end", {"reason": "headquarters is stopping"})
                    return
                if await request.is_disconnected():
                    return
                alive = await run_in_threadpool(ctx.accounts.resume, cookie, touch=False) if cookie else None
                if alive is None:
                    yield _sse("end", {"reason": "signed out"})
                    return
                for event in batch:
                    unit = event.get("unit")
                    if isinstance(unit, dict) and unit.get("lat_deg") is not None:
                        device_id = str(unit.get("device_id"))
                        if device_id not in shown:
                            shown.add(device_id)
                            unaudited.add(device_id)
                    yield _sse(str(event.get("type", "message")), event)
                if batch:
                    quiet_since = time.monotonic()
                elif time.monotonic() - quiet_since >= KEEPALIVE_S:
                    quiet_since = time.monotonic()
                    yield ": keep-alive\n\n"
                if unaudited and time.monotonic() - audited_at >= STREAM_AUDIT_S:
                    await run_in_threadpool(room.ops.positions_viewed, user, "stream", sorted(unaudited))
                    unaudited.clear()
                    audited_at = time.monotonic()
        finally:
            room.bus.unsubscribe(sub)
            if unaudited:
                await run_in_threadpool(room.ops.positions_viewed, user, "stream", sorted(unaudited))

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def _sse(kind: str, data: dict[str, Any]) -> str:
    text = json.dumps(data, separators=(",", ":"), default=str)
    return f"event: {kind}\ndata: {text}\n\n"


def routes(ctx: WebContext) -> list[BaseRoute]:
    return [
        Route("/map", map_page, methods=["GET", "HEAD"]),
        Route("/units", units_page, methods=["GET", "HEAD"]),
        Route("/units/{device_id}", unit_page, methods=["GET", "HEAD"]),
        Route("/alerts", alerts_page, methods=["GET", "HEAD"]),
        Route("/alerts/{alert_id}/ack", acknowledge, methods=["POST"]),
        Route("/api/units", units_json, methods=["GET"]),
        Route("/events", events, methods=["GET"]),
        Route("/tiles/{z}/{x}/{y}.png", tile, methods=["GET", "HEAD"]),
    ]
