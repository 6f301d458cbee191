"""The operations room as one ASGI application, mounted at /ops by ``hq.asgi``.

``FEATURES`` is the one list of feature modules. Each exposes ``routes(ctx) -> list[BaseRoute]``
(paths relative to /ops) and may expose ``NAV`` (a sequence of ``NavItem``); adding a page is
one line here. Every route guards itself with ``hq.web.roles.require``.
"""

from __future__ import annotations

from types import ModuleType

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from hq.web import audit_export, audit_pages, auth, evidence, fleet, home, lifecycle_pages, live_pages
from hq.web.context import STATIC, WebContext
from hq.web.pages import render
from hq.web.security import WebGuard

FEATURES: tuple[ModuleType, ...] = (
    auth,
    home,
    audit_pages,
    audit_export,
    live_pages,
    lifecycle_pages,
    fleet,
    evidence,
)


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    message = "There is no such page." if status == 404 else "The request could not be handled."
    return render(request.app.state.ctx, request, "error.html", status, title="Not found" if status == 404
                  else "Error", message=message)


def build_web(ctx: WebContext) -> ASGIApp:
    """The application for ``ctx``: static files, every feature's routes, the guard around them."""
    routes: list[BaseRoute] = [Mount("/static", StaticFiles(directory=STATIC), name="static")]
    for feature in FEATURES:
        ctx.nav.extend(getattr(feature, "NAV", ()))
        routes.extend(feature.routes(ctx))
    app = Starlette(routes=routes, exception_handlers={404: _http_error, 405: _http_error})
    app.state.ctx = ctx
    return WebGuard(app, ctx.origins, ctx.behind_proxy)
