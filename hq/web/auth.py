"""Signing in (password and TOTP code, or a one-time link) and out of the operations room."""

from __future__ import annotations

import secrets

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from agent.textsafe import safe_text
from hq.accounts.service import SignedIn, SignInRefused
from hq.guard import source_of
from hq.web.context import PREFIX, WebContext
from hq.web.pages import render
from hq.web.roles import context_of, current_session, require, session_cookie
from hq.web.security import CSRF_FIELD, same_origin, token_matches

MAX_FIELD = 1024  # longer names, passwords or codes are refused before any work


def signin_cookie(ctx: WebContext) -> str:
    """Holds the sign-in form's token before there is a session (login CSRF)."""
    return "__Host-bodycam-signin" if ctx.settings.secure_cookies else "bodycam-signin"


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path of this application only, never another site."""
    if target and target.startswith(PREFIX + "/") and not target.startswith("//") and "\\" not in target \
            and all(c.isprintable() and not c.isspace() for c in target):
        return target
    return PREFIX + "/"


def _source(request: Request, ctx: WebContext) -> str:
    raw = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.scope["headers"]]
    peer = request.client.host if request.client else "unknown"
    return source_of(peer, raw, ctx.behind_proxy)


def _form(request: Request, ctx: WebContext, status: int = 200, error: str = "", next_path: str = "",
          name: str = "") -> Response:
    token = secrets.token_urlsafe(32)
    response = render(ctx, request, "signin.html", status, title="Sign in", error=error, csrf_token=token,
                      next=safe_next(next_path or request.query_params.get("next")), name=name,
                      notice=request.query_params.get("ended", ""))
    response.set_cookie(signin_cookie(ctx), token, max_age=3600, path="/", secure=ctx.settings.secure_cookies,
                        httponly=True, samesite="strict")
    return response


def _signed_in(ctx: WebContext, signed: SignedIn, target: str) -> Response:
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(session_cookie(ctx), signed.session_id, path="/", secure=ctx.settings.secure_cookies,
                        httponly=True, samesite="strict")  # a session cookie: gone when the browser closes
    response.delete_cookie(signin_cookie(ctx), path="/", secure=ctx.settings.secure_cookies, httponly=True,
                           samesite="strict")
    return response


async def signin_page(request: Request) -> Response:
    ctx = context_of(request)
    session_id = request.cookies.get(session_cookie(ctx))
    if session_id and await run_in_threadpool(ctx.accounts.resume, session_id) is not None:
        return RedirectResponse(safe_next(request.query_params.get("next")), status_code=303)
    return _form(request, ctx)


async def signin_submit(request: Request) -> Response:
    ctx = context_of(request)
    headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in request.scope["headers"]]
    form = await request.form(max_files=0, max_fields=8)
    values = {k: v if isinstance(v, str) else "" for k, v in form.items()}
    name, next_path = values.get("name", ""), values.get("next", "")
    if not same_origin(headers, request.state.origin) or \
            not token_matches(request.cookies.get(signin_cookie(ctx), ""), values.get(CSRF_FIELD)):
        return _form(request, ctx, 403, "This sign-in form expired or came from another site: try again.", next_path)
    password, code = values.get("password", ""), values.get("code", "")
    if any(len(v) > MAX_FIELD for v in (name, password, code)):
        return _form(request, ctx, 400, "A field is too long.", next_path)
    try:
        signed = await run_in_threadpool(ctx.accounts.sign_in, name, password, code, _source(request, ctx))
    except SignInRefused as refused:
        response = _form(request, ctx, 429 if refused.wait_s > 0 else 401, str(refused), next_path,
                         safe_text(name)[:64])
        if refused.wait_s > 0:
            response.headers["Retry-After"] = str(max(1, round(refused.wait_s)))
        return response
    return _signed_in(ctx, signed, safe_next(next_path))


async def link(request: Request) -> Response:
    """A one-time sign-in link (``bodycam-hq user link``, the demo's admin)."""
    ctx = context_of(request)
    token = request.path_params["token"]
    try:
        signed = await run_in_threadpool(ctx.accounts.sign_in_with_link, token, _source(request, ctx))
    except SignInRefused as refused:
        return _form(request, ctx, 401, str(refused))
    return _signed_in(ctx, signed, PREFIX + "/")


@require()
async def signout(request: Request) -> Response:
    ctx = context_of(request)
    await run_in_threadpool(ctx.accounts.sign_out, current_session(request))
    response = RedirectResponse(f"{PREFIX}/signin?ended=signed-out", status_code=303)
    response.delete_cookie(session_cookie(ctx), path="/", secure=ctx.settings.secure_cookies, httponly=True,
                           samesite="strict")
    return response


def routes(ctx: WebContext) -> list[BaseRoute]:
    return [
        Route("/signin", signin_page, methods=["GET", "HEAD"]),
        Route("/signin", signin_submit, methods=["POST"]),
        Route("/signout", signout, methods=["POST"]),
        Route("/link/{token}", link, methods=["GET"]),
    ]
