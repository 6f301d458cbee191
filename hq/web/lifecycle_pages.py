"""The operations room's evidence lifecycle pages, for supervisors and admins: cases and their
legal holds, a recording's categories, the deletion queue, and a case's court export. Every
action goes through ``LifecycleService`` (audited and written to the custody ledger as the
signed-in user); every page view is audited."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from hq.accounts.records import Role
from hq.case_export import export_case
from hq.db import HqIndexError
from hq.export import ExportError, iso
from hq.lifecycle import LifecycleError, Recording, describe_retention, retain_until_ns
from hq.lifecycle_service import LifecycleService
from hq.storage import StorageError
from hq.web.context import PREFIX, WebContext
from hq.web.nav import NavItem
from hq.web.pages import render
from hq.web.roles import context_of, current_user, require

WHO = (Role.SUPERVISOR, Role.ADMIN)
NAV = (
    NavItem("Cases", "/cases", frozenset(WHO), "Cases and legal holds; court exports"),
    NavItem("Deletion queue", "/deletion-queue", frozenset(WHO), "Recordings waiting to be deleted; restore"),
)
Refusals = (LifecycleError, HqIndexError, StorageError, ExportError)


def _lifecycle(ctx: WebContext) -> LifecycleService:
    lifecycle = ctx.service.lifecycle
    if lifecycle is None:
        raise LifecycleError("this headquarters runs without the evidence lifecycle")
    return lifecycle


def _rows(lc: LifecycleService, recs: list[Recording]) -> list[dict[str, Any]]:
    known = lc.index.categories()
    return [{"device_id": r.device_id, "recording_id": r.recording_id, "recorded": iso(r.recorded_utc_ns)[:19] + "Z",
             "state": r.state, "held": r.held, "categories": ", ".join(r.categories) or "-",
             "kept_until": "until deleted" if (u := retain_until_ns(r, known)) is None else iso(u)[:10],
             "queued": "" if r.queued_utc_ns is None else iso(r.queued_utc_ns)[:19] + "Z",
             "reason": r.queue_reason or ""} for r in recs]


async def _form(request: Request) -> dict[str, str]:
    form = await request.form()
    return {k: v.strip() for k, v in form.items() if isinstance(v, str)}


def _act(back: Callable[[Request, dict[str, str]], str],
         action: Callable[[LifecycleService, str, dict[str, str], Request], Any]
         ) -> Callable[[Request], Awaitable[Response]]:
    """A POST that runs ``action`` as the signed-in user, then sees the page again (303), or shows
    the refusal on the error page (409)."""
    async def post(request: Request) -> Response:
        ctx = context_of(request)
        form = await _form(request)
        try:
            await run_in_threadpool(action, _lifecycle(ctx), current_user(request).name, form, request)
        except Refusals as exc:
            return render(ctx, request, "error.html", 409, title="Not done", message=str(exc))
        return RedirectResponse(PREFIX + back(request, form), status_code=303)
    return post


@require(*WHO)
async def cases_page(request: Request) -> Response:
    ctx = context_of(request)
    lc = _lifecycle(ctx)
    cases = await run_in_threadpool(lc.index.cases)
    await ctx.viewed(current_user(request), "cases", "cases", count=len(cases))
    return render(ctx, request, "cases.html", title="Cases", cases=[
        {"case_id": c.case_id, "title": c.title, "state": c.state, "opened": iso(c.opened_utc_ns)[:19] + "Z",
         "opened_by": c.opened_by} for c in cases])


@require(*WHO)
async def case_page(request: Request) -> Response:
    ctx = context_of(request)
    lc = _lifecycle(ctx)
    case_id = request.path_params["case_id"]
    case = await run_in_threadpool(lc.index.case, case_id)
    if case is None:
        return render(ctx, request, "error.html", 404, title="Not found", message=f"There is no case {case_id}.")
    recs = await run_in_threadpool(lambda: _rows(lc, lc.index.recordings(case_id=case_id)))
    await ctx.viewed(current_user(request), "case", f"case:{case_id}", recordings=len(recs))
    return render(ctx, request, "case.html", title=f"Case {case_id}", case=case, recordings=recs,
                  exported=request.query_params.get("exported", ""))


@require(*WHO)
async def recording_page(request: Request) -> Response:
    ctx = context_of(request)
    lc = _lifecycle(ctx)
    device_id, recording_id = request.path_params["device_id"], request.path_params["recording_id"]
    rec = await run_in_threadpool(lc.index.recording, device_id, recording_id)
    if rec is None:
        return render(ctx, request, "error.html", 404, title="Not found", message="There is no such recording.")
    known = await run_in_threadpool(lc.index.categories)
    cases = [c.case_id for c in await run_in_threadpool(lc.index.cases) if c.state == "open"]
    await ctx.viewed(current_user(request), "recording-lifecycle", f"recording:{device_id}/{recording_id}")
    return render(ctx, request, "recording_lifecycle.html", title=f"Recording {recording_id}", rec=_rows(lc, [rec])[0],
                  assigned=list(rec.categories), open_cases=cases,
                  categories=[{"name": c.name, "retention": describe_retention(c.retention_s), "doc": c.doc}
                              for c in sorted(known.values(), key=lambda c: c.name)])


@require(*WHO)
async def queue_page(request: Request) -> Response:
    ctx = context_of(request)
    lc = _lifecycle(ctx)
    recs = await run_in_threadpool(lambda: _rows(lc, lc.index.recordings(state="queued")))
    await ctx.viewed(current_user(request), "deletion-queue", "deletion-queue", recordings=len(recs))
    return render(ctx, request, "deletion_queue.html", title="Deletion queue", recordings=recs,
                  days=lc.limits.queue_s // 86400)


def _case_back(request: Request, form: dict[str, str]) -> str:
    return f"/cases/{request.path_params.get('case_id') or form.get('case_id', '')}"


def _recording_back(request: Request, form: dict[str, str]) -> str:
    return f"/recordings/{request.path_params['device_id']}/{request.path_params['recording_id']}/lifecycle"


def _export(ctx: WebContext) -> Callable[[Request], Awaitable[Response]]:
    @require(*WHO)
    async def post(request: Request) -> Response:
        lc, user = _lifecycle(ctx), current_user(request)
        case_id = request.path_params["case_id"]
        if lc.exports_dir is None:
            return render(ctx, request, "error.html", 409, title="Not exported",
                          message="This headquarters has no exports folder; use bodycam-hq export --case.")
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(ctx.now_ns() / 1e9))
        out = lc.exports_dir / f"{case_id.replace('/', '_')}-{stamp}"
        try:
            result = await run_in_threadpool(export_case, lc, ctx.index, lc.store, case_id, out,
                                             hq_pub=None, exported_by=user.name, now_ns=ctx.now_ns())
        except Refusals as exc:
            await ctx.record("export", user, f"case:{case_id}", "refused", reason=str(exc))
            return render(ctx, request, "error.html", 409, title="Not exported", message=str(exc))
        await ctx.record("export", user, f"case:{case_id}", "ok", entries=result.entries, folder=out.name)
        return RedirectResponse(f"{PREFIX}/cases/{case_id}?exported={out.name}", status_code=303)
    return post


def routes(ctx: WebContext) -> list[BaseRoute]:
    rec = "/recordings/{device_id}/{recording_id}/lifecycle"
    return [
        Route("/cases", cases_page, methods=["GET", "HEAD"]),
        Route("/cases", require(*WHO)(_act(_case_back, lambda lc, who, f, r: lc.open_case(
            who, f.get("case_id", ""), f.get("title", "") or "(no title)"))), methods=["POST"]),
        Route("/cases/{case_id}", case_page, methods=["GET", "HEAD"]),
        Route("/cases/{case_id}/add", require(*WHO)(_act(_case_back, lambda lc, who, f, r: lc.add_to_case(
            who, r.path_params["case_id"], f.get("device_id", ""), f.get("recording_id", "")))), methods=["POST"]),
        Route("/cases/{case_id}/remove", require(*WHO)(_act(_case_back, lambda lc, who, f, r: lc.remove_from_case(
            who, r.path_params["case_id"], f.get("device_id", ""), f.get("recording_id", "")))), methods=["POST"]),
        Route("/cases/{case_id}/close", require(*WHO)(_act(_case_back, lambda lc, who, f, r: lc.close_case(
            who, r.path_params["case_id"]))), methods=["POST"]),
        Route("/cases/{case_id}/export", _export(ctx), methods=["POST"]),
        Route(rec, recording_page, methods=["GET", "HEAD"]),
        Route(rec + "/assign", require(*WHO)(_act(_recording_back, lambda lc, who, f, r: lc.assign(
            who, r.path_params["device_id"], r.path_params["recording_id"], f.get("category", "")))),
            methods=["POST"]),
        Route(rec + "/remove", require(*WHO)(_act(_recording_back, lambda lc, who, f, r: lc.unassign(
            who, r.path_params["device_id"], r.path_params["recording_id"], f.get("category", "")))),
            methods=["POST"]),
        Route(rec + "/delete", require(*WHO)(_act(_recording_back, lambda lc, who, f, r: lc.request_deletion(
            who, r.path_params["device_id"], r.path_params["recording_id"], f.get("reason", "") or "no reason given"))),
            methods=["POST"]),
        Route("/deletion-queue", queue_page, methods=["GET", "HEAD"]),
        Route("/deletion-queue/restore", require(*WHO)(_act(lambda r, f: "/deletion-queue", lambda lc, who, f, r:
            lc.restore(who, f.get("device_id", ""), f.get("recording_id", "")))), methods=["POST"]),
    ]
