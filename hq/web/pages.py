"""Rendering a page of the operations room: the template, the signed-in user, the nav for their
roles and the CSRF token every form carries."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from hq.web.nav import PREFIX

if TYPE_CHECKING:
    from hq.web.context import WebContext


def render(ctx: WebContext, request: Request, template: str, status: int = 200, **values: Any) -> Response:
    principal = getattr(request.state, "principal", None)
    user = principal.user if principal else None
    nav = [item for item in ctx.nav if user is not None and (not item.roles or item.roles & user.roles)]
    return ctx.templates.TemplateResponse(request, template, {
        "prefix": PREFIX,
        "user": user,
        "roles": sorted(user.roles) if user else [],
        "csrf_token": principal.session.csrf_token if principal else values.pop("csrf_token", ""),
        "nav": nav,
        "path": request.url.path,
        "idle_s": int(ctx.settings.sessions.idle_s),
        **values,
    }, status_code=status)
