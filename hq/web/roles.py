"""Who may do what in the operations room: ``Role``, the ``require`` guard every route uses, and
``current_user``. Checks are on the server; the nav only hides what a role cannot use."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from hq.accounts.records import Role, Session, User
from hq.web.context import PREFIX, WebContext
from hq.web.pages import render
from hq.web.security import CSRF_FIELD, CSRF_HEADER, SAFE_METHODS, same_origin, token_matches

__all__ = ["Principal", "Role", "current_session", "current_user", "require", "session_cookie"]

Page = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Principal:
    user: User
    session: Session


def session_cookie(ctx: WebContext) -> str:
    """``__Host-`` binds the cookie to this exact origin (Secure, Path=/, no Domain)."""
    return "__Host-bodycam-ops" if ctx.settings.secure_cookies else "bodycam-ops"


def context_of(request: Request) -> WebContext:
    ctx: WebContext = request.app.state.ctx
    return ctx


def current_user(request: Request) -> User:
    """The signed-in user of a request that passed ``require``."""
    principal: Principal = request.state.principal
    return principal.user


def current_session(request: Request) -> Session:
    principal: Principal = request.state.principal
    return principal.session


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "") or request.headers.get(CSRF_HEADER) is not None


async def _csrf_ok(request: Request, session: Session) -> bool:
    headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in request.scope["headers"]]
    if not same_origin(headers, request.state.origin):
        return False
    given = request.headers.get(CSRF_HEADER)
    if given is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")):
        value = (await request.form()).get(CSRF_FIELD)
        given = value if isinstance(value, str) else None
    return token_matches(session.csrf_token, given)


def require(*roles: Role) -> Callable[[Page], Page]:
    """Guard a route: a live session (else the sign-in page, or 401 for scripts), the CSRF token
    and same origin on every non-GET (else 403), and one of ``roles`` when any are given (else
    403, audited as ``access-denied``)."""
    wanted = frozenset(roles)

    def wrap(page: Page) -> Page:
        @functools.wraps(page)
        async def guarded(request: Request) -> Response:
            ctx = context_of(request)
            session_id = request.cookies.get(session_cookie(ctx))
            found = await run_in_threadpool(ctx.accounts.resume, session_id) if session_id else None
            if found is None:
                return _sign_in_first(request)
            session, user = found
            request.state.principal = Principal(user, session)
            if request.method not in SAFE_METHODS and not await _csrf_ok(request, session):
                await ctx.record("csrf-refused", user, f"path:{request.url.path}", "refused", method=request.method)
                return _refused(request, ctx, 403, "This form is out of date or came from another site. "
                                "Reload the page and try again.")
            if wanted and not (user.roles & wanted):
                await ctx.record("access-denied", user, f"path:{request.url.path}", "refused",
                                 needs=sorted(wanted), has=sorted(user.roles))
                return _refused(request, ctx, 403, "Your roles do not include this page. The refusal was recorded.")
            return await page(request)

        return guarded

    return wrap


def _sign_in_first(request: Request) -> Response:
    if request.method in SAFE_METHODS and not _wants_json(request):
        return RedirectResponse(f"{PREFIX}/signin?next={quote(request.url.path)}", status_code=303)
    return JSONResponse({"error": {"code": "signed-out", "message": "sign in again"}}, status_code=401)


def _refused(request: Request, ctx: WebContext, status: int, message: str) -> Response:
    if _wants_json(request):
        return JSONResponse({"error": {"code": "forbidden", "message": message}}, status_code=status)
    return render(ctx, request, "error.html", status, title="Not allowed", message=message)
