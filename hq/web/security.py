"""What every response of the operations room carries, and the checks before any page: the
request names one of this service's origins (else 421), and a state-changing request comes from
one of them (Origin or Referer) with the session's CSRF token. Pure functions plus one ASGI
middleware."""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hq.guard import Origins

# No inline script or style anywhere: every script and sheet is a file under /ops/static.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "media-src 'self' blob:; worker-src 'self' blob:; connect-src 'self'; font-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HEADERS = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=(), usb=()"),
)
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


def request_host(headers: Sequence[tuple[str, str]], behind_proxy: bool) -> str | None:
    wanted = "x-forwarded-host" if behind_proxy and any(n == "x-forwarded-host" for n, _ in headers) else "host"
    values = [v for n, v in headers if n == wanted]
    return values[0] if len(values) == 1 else None


def same_origin(headers: Sequence[tuple[str, str]], origin: str) -> bool:
    """Whether a state-changing request comes from ``origin``: its Origin header, or, when a
    browser sent none, its Referer's origin. Neither present: refused."""
    sent = [v for n, v in headers if n == "origin"]
    if sent:
        return len(sent) == 1 and sent[0].rstrip("/").lower() == origin
    referers = [v for n, v in headers if n == "referer"]
    if len(referers) != 1:
        return False
    parts = urlsplit(referers[0])
    return f"{parts.scheme}://{parts.netloc}".lower() == origin


def token_matches(expected: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())


class WebGuard:
    """ASGI middleware: 421 for a host that is none of the service's origins; the security
    headers on every response; ``scope["state"]["origin"]`` set to the origin the request named."""

    def __init__(self, app: ASGIApp, origins: Origins, behind_proxy: bool, no_store: bool = True) -> None:
        self.app = app
        self.origins = origins
        self.behind_proxy = behind_proxy
        self.no_store = no_store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]]
        host = request_host(headers, self.behind_proxy)
        origin = self.origins.match(host) if host else None
        if origin is None:
            if scope["type"] == "http":
                await _plain(send, 421, b"this service does not answer for that host name\n")
            return
        scope.setdefault("state", {})["origin"] = origin
        static = scope.get("path", "").startswith("/ops/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = list(HEADERS)
                names = {k.lower() for k, _ in message.get("headers", [])}
                if not static and b"cache-control" not in names:
                    extra.append((b"cache-control", b"no-store"))
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _plain(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": [*headers, *HEADERS]})
    await send({"type": "http.response.body", "body": body})
