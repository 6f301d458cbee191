"""The home page: what the signed-in user's roles let them do."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from hq.web.context import WebContext
from hq.web.pages import render
from hq.web.roles import context_of, current_user, require


@require()
async def home(request: Request) -> Response:
    ctx = context_of(request)
    user = current_user(request)
    return render(ctx, request, "home.html", title="Home",
                  can=[item for item in ctx.nav if not item.roles or item.roles & user.roles])


def routes(ctx: WebContext) -> list[BaseRoute]:
    return [Route("/", home, methods=["GET", "HEAD"])]
