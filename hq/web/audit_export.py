"""Audit trails exported as CSV or PDF (auditors): per evidence (object id), per user, or any
search of the audit page. The export itself is audited (``audit-export``)."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from hq.accounts.records import Role
from hq.trail_export import MAX_PDF_ROWS, MAX_ROWS, TrailError, collect, to_csv, to_pdf, utc_text
from hq.web.audit_pages import FilterError, parse_filters
from hq.web.context import WebContext
from hq.web.pages import render
from hq.web.roles import context_of, current_user, require

TYPES = {"csv": "text/csv; charset=utf-8", "pdf": "application/pdf"}


def _title(detail: dict[str, str]) -> str:
    if set(detail) == {"object"}:
        return f"Audit trail of {detail['object']}"
    if set(detail) == {"user"}:
        return f"Audit trail of user {detail['user']}"
    return "Audit trail"


@require(Role.AUDITOR)
async def export(request: Request) -> Response:
    ctx = context_of(request)
    user = current_user(request)
    kind = request.path_params["kind"]
    if kind not in TYPES:
        return render(ctx, request, "error.html", 404, title="Not found", message="Export as .csv or .pdf.")
    try:
        filters = parse_filters(request.query_params)
        limit = MAX_PDF_ROWS if kind == "pdf" else MAX_ROWS
        records = await run_in_threadpool(collect, ctx.index, filters.query(), limit)
    except (FilterError, TrailError) as exc:
        await ctx.record("audit-export", user, "audit", "refused", format=kind, reason=str(exc))
        return render(ctx, request, "error.html", 400, title="Export refused", message=str(exc))
    now = ctx.now_ns()
    detail = filters.detail()
    if kind == "csv":
        body = to_csv(records)
    else:
        body = await run_in_threadpool(to_pdf, records, _title(detail), detail, user.name, now)
    await ctx.record("audit-export", user, "audit", "ok", format=kind, records=len(records), **detail)
    name = f"audit-trail-{utc_text(now)[:19].replace(':', '')}.{kind}"
    return Response(body, media_type=TYPES[kind], headers={"Content-Disposition": f'attachment; filename="{name}"'})


def routes(ctx: WebContext) -> list[BaseRoute]:
    return [Route("/audit/export.{kind:str}", export, methods=["GET"])]
