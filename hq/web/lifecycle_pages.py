"""The operations room's evidence lifecycle pages, for supervisors and admins: cases and their
legal holds, a recording's categories, the deletion queue, and a case's court export (queued:
hq/export_jobs.py; a status page; the result downloadable by its requester only). Every
action goes through ``LifecycleService`` (audited and written to the custody ledger as the
signed-in user); every page view is audited."""

from __future__ import annotations

import datetime
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from hq.accounts.records import Role
from hq.case_export import export_case
from hq.credentials import ensure_credentials
from hq.db import HqIndexError
from hq.decrypt_client import DecryptClient
from hq.evidence_service import Decrypter
from hq.export import ExportError, iso
from hq.export_jobs import ExportJob, ExportJobError, ExportJobs, ExportOutcome
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
    NavItem("Court exports", "/exports", frozenset(WHO), "Court exports in progress and done; download yours"),
)
EXPORT_WORKERS = 1  # exports decrypt and remux whole recordings: one at a time beside the service
EXPORT_QUEUE = 8
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
    return render(ctx, request, "case.html", title=f"Case {case_id}", case=case, recordings=recs)


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


def export_jobs(ctx: WebContext, lc: LifecycleService, decrypter: Decrypter | None,
                workers: int = EXPORT_WORKERS, queue_max: int = EXPORT_QUEUE) -> ExportJobs | None:
    """The operations room's export queue over ``lc``'s exports folder (None without one): each job
    runs ``export_case`` as its requester, with viewing copies when a ``decrypter`` is given and
    C2PA credentials when the keys folder is at hand, then zips the folder for download."""
    exports = lc.exports_dir
    if exports is None:
        return None

    def run(job: ExportJob) -> ExportOutcome:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(ctx.now_ns() / 1e9))
        out = exports / f"{job.case_id.replace('/', '_')}-{stamp}-{job.job_id[:8]}"
        signer = None
        if decrypter is not None and lc.keys_dir is not None:
            signer = ensure_credentials(lc.keys_dir, datetime.datetime.fromtimestamp(ctx.now_ns() / 1e9, datetime.UTC))
        hq_pub = None if lc.keys_dir is None else lc.keys_dir / "hq.pub"
        result = export_case(lc, ctx.index, lc.store, job.case_id, out, hq_pub=hq_pub, exported_by=job.requested_by,
                             now_ns=ctx.now_ns(), decrypter=decrypter, signer=signer)
        archive = shutil.make_archive(str(out), "zip", root_dir=exports, base_dir=out.name)
        os.chmod(archive, 0o600)
        return ExportOutcome(out.name, Path(archive).name, result.recordings, result.viewing_copies)

    def finished(job: ExportJob) -> None:
        ctx.audit.add("export", job.requested_by, f"case:{job.case_id}", "ok" if job.state == "done" else "failed",
                      {"job": job.job_id, "folder": job.folder, "recordings": job.recordings,
                       "viewing_copies": job.viewing_copies, "reason": job.error})

    return ExportJobs(exports / "jobs", run, ctx.now_ns, workers=workers, queue_max=queue_max, on_finish=finished)


def _export(ctx: WebContext, jobs: ExportJobs | None) -> Callable[[Request], Awaitable[Response]]:
    @require(*WHO)
    async def post(request: Request) -> Response:
        user = current_user(request)
        case_id = request.path_params["case_id"]
        if jobs is None:
            return render(ctx, request, "error.html", 409, title="Not exported",
                          message="This headquarters has no exports folder; use bodycam-hq export --case.")
        case = await run_in_threadpool(_lifecycle(ctx).index.case, case_id)
        if case is None:
            return render(ctx, request, "error.html", 404, title="Not found", message=f"There is no case {case_id}.")
        try:
            job = await run_in_threadpool(jobs.submit, case_id, user.name)
        except ExportJobError as exc:
            await ctx.record("export-queued", user, f"case:{case_id}", "refused", reason=str(exc))
            return render(ctx, request, "error.html", 503, title="Not queued", message=str(exc))
        await ctx.record("export-queued", user, f"case:{case_id}", "ok", job=job.job_id)
        return RedirectResponse(f"{PREFIX}/exports#job-{job.job_id}", status_code=303)
    return post


def _job_row(job: ExportJob, user: str) -> dict[str, Any]:
    def when(ns: int | None) -> str:
        return "" if ns is None else iso(ns)[:19] + "Z"
    return {"job_id": job.job_id, "case_id": job.case_id, "requested_by": job.requested_by, "state": job.state,
            "requested": when(job.requested_utc_ns), "finished": when(job.finished_utc_ns), "error": job.error or "",
            "folder": job.folder or "", "recordings": job.recordings, "viewing_copies": job.viewing_copies,
            "mine": job.requested_by == user, "download": job.state == "done" and job.requested_by == user}


def _exports_page(ctx: WebContext, jobs: ExportJobs | None) -> Callable[[Request], Awaitable[Response]]:
    @require(*WHO)
    async def page(request: Request) -> Response:
        user = current_user(request)
        everyone = Role.ADMIN in user.roles  # an admin oversees every export; only its requester downloads one
        found = [] if jobs is None else await run_in_threadpool(jobs.jobs, None if everyone else user.name)
        await ctx.viewed(user, "exports", "exports", jobs=len(found))
        return render(ctx, request, "exports.html", title="Court exports", jobs=[_job_row(j, user.name) for j in found],
                      workers=jobs.workers if jobs else 0, queue_max=jobs.queue_max if jobs else 0, everyone=everyone,
                      decrypts=ctx.settings.decryptd_socket is not None)
    return page


def _download(ctx: WebContext, jobs: ExportJobs | None) -> Callable[[Request], Awaitable[Response]]:
    @require(*WHO)
    async def get(request: Request) -> Response:
        user = current_user(request)
        job = None if jobs is None else jobs.get(request.path_params["job_id"])
        target = f"export:{request.path_params['job_id'][:40]}"
        if job is None or jobs is None or job.state != "done" or job.archive is None:
            return render(ctx, request, "error.html", 404, title="Not found",
                          message="There is no such finished export.")
        if job.requested_by != user.name:
            await ctx.record("download-export", user, target, "refused", reason="not the requester",
                             requested_by=job.requested_by)
            return render(ctx, request, "error.html", 403, title="Not yours",
                          message="Only the supervisor who asked for this export may download it.")
        await ctx.viewed(user, "export-download", target, case_id=job.case_id, archive=job.archive)
        return FileResponse(jobs.folder.parent / job.archive, media_type="application/zip", filename=job.archive)
    return get


def routes(ctx: WebContext) -> list[BaseRoute]:
    rec = "/recordings/{device_id}/{recording_id}/lifecycle"
    lifecycle = ctx.service.lifecycle
    socket = ctx.settings.decryptd_socket  # viewing copies need the decrypt component, as playback does
    jobs = None if lifecycle is None else export_jobs(ctx, lifecycle, None if socket is None else DecryptClient(socket))
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
        Route("/cases/{case_id}/export", _export(ctx, jobs), methods=["POST"]),
        Route("/exports", _exports_page(ctx, jobs), methods=["GET", "HEAD"]),
        Route("/exports/{job_id}/download", _download(ctx, jobs), methods=["GET", "HEAD"]),
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
