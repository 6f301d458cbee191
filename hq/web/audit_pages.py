"""Audit trails for auditors: search by user, object, event type and time range (viewing is audited)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from hq.accounts.records import Role
from hq.records import AuditQuery, AuditRecord
from hq.web.context import WebContext
from hq.web.nav import NavItem
from hq.web.pages import render
from hq.web.roles import context_of, current_user, require

NAV = (NavItem("Audit", "/audit", frozenset({Role.AUDITOR}), "Audit trails: who did what, when, to which object"),)
PAGE_ROWS = 200
MAX_FILTER = 200


class FilterError(ValueError):
    """A filter of the audit search that cannot be read; ``str`` says which and how to write it."""


@dataclass(frozen=True, slots=True)
class AuditFilters:
    """The search form as typed, and the query it means."""

    user: str = ""
    target: str = ""
    event_type: str = ""
    start: str = ""  # UTC, "YYYY-MM-DDTHH:MM[:SS]"
    end: str = ""

    def query(self, before_id: int | None = None, limit: int = PAGE_ROWS) -> AuditQuery:
        return AuditQuery(actor=self.user or None, target=self.target or None, event_type=self.event_type or None,
                          from_ns=_utc_ns(self.start, "from"), to_ns=_utc_ns(self.end, "to"),
                          before_id=before_id, limit=limit)

    def detail(self) -> dict[str, str]:
        return {k: v for k, v in (("user", self.user), ("object", self.target), ("event_type", self.event_type),
                                  ("from", self.start), ("to", self.end)) if v}


def parse_filters(params: Mapping[str, str]) -> AuditFilters:
    values = {k: params.get(k, "").strip() for k in ("user", "object", "event", "from", "to")}
    for key, value in values.items():
        if len(value) > MAX_FILTER or not value.isprintable():
            raise FilterError(f"the filter '{key}' is too long or holds control characters")
    filters = AuditFilters(values["user"], values["object"], values["event"], values["from"], values["to"])
    filters.query()  # the times parse
    return filters


def _utc_ns(text: str, name: str) -> int | None:
    if not text:
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise FilterError(f"'{name}' is not a time: write it as YYYY-MM-DDTHH:MM (UTC)") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp()) * 1_000_000_000 + when.microsecond * 1000


def utc_text(utc_ns: int) -> str:
    """An audit time as an auditor reads it: ISO 8601 UTC with milliseconds."""
    when = dt.datetime.fromtimestamp(utc_ns / 1e9, dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def rows_for_page(records: list[AuditRecord]) -> list[dict[str, object]]:
    return [{"id": r.id, "time": utc_text(r.utc_ns), "component": r.component, "event": r.event_type,
             "user": r.actor, "target": r.target, "outcome": r.outcome,
             "detail": ", ".join(f"{k}={v}" for k, v in sorted(r.detail.items()))} for r in records]


@require(Role.AUDITOR)
async def audit_page(request: Request) -> Response:
    ctx = context_of(request)
    user = current_user(request)
    try:
        filters = parse_filters(request.query_params)
        before = request.query_params.get("before", "")
        before_id = int(before) if before.isdigit() else None
        records = await run_in_threadpool(ctx.index.audit_search, filters.query(before_id))
    except FilterError as exc:
        return render(ctx, request, "audit.html", 400, title="Audit trails", error=str(exc), rows=[],
                      filters=AuditFilters(), older=None)
    await ctx.viewed(user, "audit-trail", "audit", **filters.detail())
    older = records[-1].id if len(records) == PAGE_ROWS else None
    return render(ctx, request, "audit.html", title="Audit trails", error="", rows=rows_for_page(records),
                  filters=filters, older=older)


def routes(ctx: WebContext) -> list[BaseRoute]:
    return [Route("/audit", audit_page, methods=["GET", "HEAD"])]
