"""Evidence in the operations room, for supervisors: search, a recording's page (segments,
receipts, chain position, marks on a timeline, its GNSS trail on the map) and playback in the
browser. Thin over ``hq.evidence_service.EvidenceService`` (``ctx.evidence``), which audits every
search, view, trail and playback before anything is shown; other roles get 403, audited by
``require`` as ``access-denied``.

Playback streams the fragmented MP4 ``EvidenceService.play`` makes as decryptd opens the segments,
from the segment the player asks for (``from_seq``; seeking is by segment, then within it by the
player: hq/rendition.py). The player (static/evidence-player.js) feeds it to a ``MediaSource``
offset by ``X-Bodycam-Start-Ms``, so the video's time is the recording's. Nothing is written to
disk and the answer is ``no-store``, so no browser cache keeps it either. Without
``--decryptd-socket`` playback and the trail answer 503 saying what to start; search and the pages
still work.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from hq.accounts.records import Role
from hq.evidence_service import EvidenceError, RecordingView, parse_filter
from hq.web.context import WebContext
from hq.web.fleet import iso_utc
from hq.web.nav import NavItem
from hq.web.pages import render
from hq.web.roles import context_of, current_user, require

WHO = (Role.SUPERVISOR,)
NAV = (NavItem("Evidence", "/evidence", frozenset(WHO), "Search recordings; play them with their marks and trail"),)
STATUS = {"bad-request": 400, "not-found": 404, "unavailable": 503}
FIELDS = ("unit", "from", "to", "recording", "marks", "status", "source")
RENDITIONS = ("video", "thermal")
# where the stream's time 0 lies on the recording's timeline, and its codecs: the player's
# MediaSource offsets the stream by the one and declares the other (hq/rendition.py)
START_HEADER = "X-Bodycam-Start-Ms"
CODECS_HEADER = "X-Bodycam-Codecs"


def clock(ms: int) -> str:
    """``1:02:03.4`` / ``2:03.4``: a position on a recording's timeline."""
    s, tenths = divmod(ms // 100, 10)
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return (f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}") + f".{tenths}"


@require(*WHO)
async def search_page(request: Request) -> Response:
    ctx = context_of(request)
    given = {k: v for k, v in request.query_params.items() if k in (*FIELDS, "page")}
    shown = {k: given.get(k, "").strip() for k in FIELDS}
    try:
        f = parse_filter(given)
        found = await run_in_threadpool(ctx.evidence.search, current_user(request).name, f)
    except EvidenceError as exc:
        return render(ctx, request, "evidence_search.html", STATUS.get(exc.kind, 400), title="Evidence",
                      form=shown, error=str(exc), results=None)
    page = f.offset // f.limit + 1
    link = {k: v for k, v in shown.items() if v}
    return render(ctx, request, "evidence_search.html", title="Evidence", form=shown, error="", results=found,
                  page=page, pages=max(1, -(-found.total // f.limit)), iso=iso_utc, clock=clock,
                  prev_q=urlencode({**link, "page": page - 1}) if page > 1 else "",
                  next_q=urlencode({**link, "page": page + 1}) if page * f.limit < found.total else "")


async def _view(request: Request) -> RecordingView:
    ctx = context_of(request)
    return await run_in_threadpool(ctx.evidence.recording, current_user(request).name,
                                   request.path_params["device_id"], request.path_params["recording_id"])


def _refused(ctx: WebContext, request: Request, exc: EvidenceError) -> Response:
    status = STATUS.get(exc.kind, 400)
    if "application/json" in request.headers.get("accept", "") or request.url.path.endswith((".json", ".mp4")):
        return JSONResponse({"error": {"code": exc.kind, "message": str(exc)}}, status_code=status)
    return render(ctx, request, "error.html", status, title="Not available", message=str(exc))


@require(*WHO)
async def recording_page(request: Request) -> Response:
    ctx = context_of(request)
    try:
        view = await _view(request)
    except EvidenceError as exc:
        return _refused(ctx, request, exc)
    room = ctx.ops
    return render(ctx, request, "evidence_recording.html", title=f"Recording {view.recording_id}", v=view,
                  iso=iso_utc, clock=clock, receipts=view.receipts, basemap=room.tiles.info if room else None,
                  playable=ctx.settings.decryptd_socket is not None, timeline=timeline_data(view),
                  search_q=urlencode({"unit": view.device_id}))


@require(*WHO)
async def trail_json(request: Request) -> Response:
    """The recording's GNSS fixes and its marks' notes (opened by decryptd; a view of positions)."""
    ctx = context_of(request)
    try:
        view = await _view(request)
        fixes, notes = await run_in_threadpool(ctx.evidence.trail, current_user(request).name, view)
    except EvidenceError as exc:
        return _refused(ctx, request, exc)
    return JSONResponse({
        "fixes": [{"at_ms": f.at_ms, "utc_ns": f.utc_ns, "lat_deg": f.lat_deg, "lon_deg": f.lon_deg,
                   "h_acc_m": f.h_acc_m} for f in fixes],
        "notes": {str(k): v for k, v in notes.items()},
    })


@require(*WHO)
async def play(request: Request) -> Response:
    """``?rendition=video|thermal&from_seq=N&camera=NAME``: the fragmented MP4 from segment N
    (default the first) of camera NAME (default the first)."""
    ctx = context_of(request)
    rendition = request.query_params.get("rendition", "video")
    camera = request.query_params.get("camera") or None
    seq_text = request.query_params.get("from_seq", "")
    try:
        if rendition not in RENDITIONS:
            raise EvidenceError("bad-request", "rendition: video or thermal")
        if seq_text and not seq_text.isdigit():
            raise EvidenceError("bad-request", "from_seq: the sequence number of one of the recording's segments")
        view = await _view(request)
        stream = await run_in_threadpool(
            ctx.evidence.play, current_user(request).name, view, int(seq_text) if seq_text else None, rendition,
            camera)
    except EvidenceError as exc:
        return _refused(ctx, request, exc)
    # a sync iterator: Starlette pulls each piece in a worker thread, so decrypting never blocks the loop
    return StreamingResponse(stream, media_type="video/mp4", headers={
        "Cache-Control": "no-store", "X-Accel-Buffering": "no",
        START_HEADER: str(stream.start_ms), CODECS_HEADER: stream.codecs})


def timeline_data(view: RecordingView) -> dict[str, Any]:
    """What the player's script needs: segments and marks on the recording's timeline (ms)."""
    return {"duration_ms": view.duration_ms,
            "segments": [{"seq": s.seq, "offset_ms": s.offset_ms, "duration_ms": s.duration_ms,
                          "utc_start_ms": s.entry.utc_start_ns // 1_000_000} for s in view.segments],
            "marks": [{"id": m.id, "at_ms": m.at_ms, "utc_ns": m.utc_ns, "by": m.by} for m in view.marks]}


def routes(ctx: WebContext) -> list[BaseRoute]:
    rec = "/evidence/{device_id}/{recording_id}"
    return [
        Route("/evidence", search_page, methods=["GET", "HEAD"]),
        Route(rec, recording_page, methods=["GET", "HEAD"]),
        Route(rec + "/trail.json", trail_json, methods=["GET"]),
        Route(rec + "/play.mp4", play, methods=["GET"]),
    ]
