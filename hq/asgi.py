"""Headquarters' HTTP routes as an ASGI application (Starlette), thin over ``HqService``.

Per request, in this order: a source whose refusals used up its rate gets 429 at once; the checks
that need no body (``hq.guard``: route, length, origin, method override); the signature over the
headers, the declared ``Content-Digest`` included (``HqService.admit``); only then is the body
read, bounded by its declared length (at most 4 MiB for a PATCH), and checked against that
digest; then the service answers. A request refused before its body was read is answered with
``Connection: close``, so its body is never read, let alone parsed as a next request (security
review, findings 2 and 3). Service calls block (index, files, verification), so they run in
worker threads, never on the event loop.

``/healthz`` (the process answers), ``/readyz`` (index and store reachable) and the transparency
log's static tiles under ``/tlog/`` (c2sp.org/tlog-tiles) need no signature, write no audit and are
rate limited per source.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import RedirectResponse
from starlette.responses import Response as HttpResponse
from starlette.routing import Mount
from starlette.routing import Route as HttpRoute

from agent.textsafe import safe_text
from hq.errors import ApiError
from hq.guard import Admission, Origins, check_request, source_of
from hq.limits import LimitSettings, RateLimiter, retry_after
from hq.longpoll import PollError, PollWaiters, parse_wait
from hq.metrics import Metrics
from hq.ops_room import OpsRoom
from hq.refusals import clip
from hq.service import INGEST_HEADER, REQUESTS_HEADER, HqService, Response, error_response
from hq.tlog_serve import TileServer
from hq.tus import TUS_VERSION
from hq.web.app import build_web
from hq.web.context import WebSettings, web_context

log = logging.getLogger(__name__)

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
# Health probes: a load balancer polls each node every second or two.
HEALTH_PER_S = 5.0
HEALTH_BURST = 20
# A refusal that leaves the connection usable: no body was pending, or the framing is intact.
_KEEPS_CONNECTION = (401, 403, 404, 405, 409, 412, 415, 421, 422, 429, 460)


@dataclass(frozen=True, slots=True)
class AppSettings:
    origins: Origins
    behind_proxy: bool = False
    limits: LimitSettings = LimitSettings()
    web: WebSettings = WebSettings()


class HqApp:
    """The ASGI application of one node: routes, rate limits and metrics around one service."""

    def __init__(
        self,
        service: HqService,
        settings: AppSettings,
        metrics: Metrics | None = None,
        now_s: Callable[[], float] = time.monotonic,
        ops: OpsRoom | None = None,
    ) -> None:
        self.service = service
        self.ops = ops
        self.settings = settings
        self.metrics = metrics or Metrics()
        service.refusals.observer = self.metrics.auth_refused
        self.metrics.watch_queue(service.observe(self.metrics.ingest_done))
        limits = settings.limits
        self.refusal_rate = RateLimiter(limits.refusals_per_s, limits.refusal_burst, now_s)
        self.health_rate = RateLimiter(HEALTH_PER_S, HEALTH_BURST, now_s)
        self.in_flight = 0
        self.tiles = TileServer(service.tlog) if service.tlog is not None else None
        web = web_context(service, settings.web, settings.origins, settings.behind_proxy, ops)
        self.waiters = PollWaiters(service.requests.due_among)
        service.requests.on_queued = self.waiters.notify
        self.asgi = Starlette(routes=[
            HttpRoute("/healthz", self.healthz, methods=["GET", "HEAD"]),
            HttpRoute("/readyz", self.readyz, methods=["GET", "HEAD"]),
            HttpRoute("/tlog/{path:path}", self.tlog, methods=["GET", "HEAD"]),
            # the operations room (hq/web), before the sync API's catch-all
            HttpRoute("/ops", lambda _request: RedirectResponse("/ops/", 308), methods=["GET", "HEAD"]),
            Mount("/ops", app=build_web(web)),
            HttpRoute("/{path:path}", self.sync, methods=METHODS),
        ])

    # -- the sync API (docs/sync-protocol.md) ----------------------------------------------

    async def sync(self, request: Request) -> HttpResponse:
        self.in_flight += 1
        try:
            return await self._sync(request)
        finally:
            self.in_flight -= 1

    async def _sync(self, request: Request) -> HttpResponse:
        raw_headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.scope["headers"]]
        peer = request.client.host if request.client else "unknown"
        source = source_of(peer, raw_headers, self.settings.behind_proxy)
        path = request.scope.get("raw_path", request.url.path.encode()).decode("latin-1")
        query = request.scope.get("query_string", b"").decode("latin-1")
        path_and_query = path + ("?" + query if query else "")
        route_name = "-"
        declared = _declared_length(raw_headers)
        admitted = False
        shown_path = request.url.path  # decoded: what an auditor reads, escaped when recorded
        try:
            wait = self.refusal_rate.limited(source)
            if wait > 0:
                raise ApiError(429, "rate-limited", "too many refused requests from this address; retry later",
                               {"Retry-After": retry_after(wait)})
            admission = check_request(request.method, path_and_query, raw_headers, self.settings.origins,
                                      self.settings.behind_proxy)
            route_name = admission.route.name
            headers = {k.lower(): v for k, v in raw_headers}
            device_id = await run_in_threadpool(
                self.service.admit, admission.route, admission.method, admission.target_uri, headers, source)
            admitted = True
            declared = 0  # admitted: the body is read from here on
            body = await _read_body(request, admission)
            if device_id is not None:
                await run_in_threadpool(
                    self.service.check_body, device_id, headers, body, admission.target_uri, source)
            response = await self._answer(admission, device_id, headers, body)
            close = False
        except ApiError as err:
            if not admitted and err.status != 401:  # the service audits the 401s it decides
                await run_in_threadpool(self.service.refusals.refused, source, err.code, shown_path)
            response = error_response(err)
            if (not admitted or err.status == 401) and err.status != 429:
                self.refusal_rate.take(source)
            close = declared > 0 or err.status not in _KEEPS_CONNECTION
        except ClientDisconnect:
            log.info("%s: %s %s: the client left before its body arrived", source, request.method,
                     clip(shown_path, 200))
            return HttpResponse(status_code=400, headers={"Connection": "close"})
        except Exception:
            log.exception("%s %s failed", request.method, clip(shown_path, 200))
            response = Response(500, {"Content-Type": "application/json"}, _internal_error())
            close = True
        self.metrics.request_done(route_name, response.status)
        log.debug("%s %s %s -> %d", safe_text(source), request.method, clip(shown_path, 200), response.status)
        return _http(response, close)

    async def _answer(
        self, admission: Admission, device_id: str | None, headers: dict[str, str], body: bytes
    ) -> Response:
        started = time.monotonic()
        if admission.route.name == "poll" and device_id is not None:
            return await self._poll(admission, device_id, headers, body)
        # A completing PATCH's wait for its ingest happens in the event loop (_await_ingest), not
        # in a thread of the pool every request's work runs in.
        response = await run_in_threadpool(self.service.answer, admission.route, device_id, headers, body, 0.0)
        upload_id = admission.route.upload_id
        pending = admission.route.name == "patch" and response.headers.get(INGEST_HEADER) == "pending"
        if pending and device_id is not None and upload_id is not None:
            response = await self._await_ingest(device_id, upload_id)
        if admission.route.name == "heartbeat":
            self.metrics.heartbeat_done(time.monotonic() - started)
        return response

    async def _await_ingest(self, device_id: str, upload_id: str) -> Response:
        """Wait up to the service's ingest wait for the upload's ingest, without holding a thread,
        then answer as it stands (the final answer, or pending: the unit asks again with HEAD)."""
        future = self.service.pool.pending(upload_id)
        if future is not None:
            waited = asyncio.wrap_future(future)
            # How the ingest ended is in the index; its exception (logged by the pool) is not news.
            waited.add_done_callback(lambda f: f.cancelled() or f.exception())
            await asyncio.wait([waited], timeout=self.service.ingest_wait_s)
        return await run_in_threadpool(self.service.collect, device_id, upload_id)

    async def _poll(self, admission: Admission, device_id: str, headers: dict[str, str], body: bytes) -> Response:
        """A unit's poll for requests: answered as soon as one is due, else after its ``wait_s``
        (an empty list); the wait holds no thread (hq/longpoll.py)."""
        try:
            wait_s = parse_wait(urlsplit(admission.target_uri).query)
        except PollError as exc:
            raise ApiError(400, "bad-query", str(exc)) from exc
        deadline = time.monotonic() + wait_s
        while True:
            response = await run_in_threadpool(self.service.answer, admission.route, device_id, headers, body)
            left_s = deadline - time.monotonic()
            if response.status != 200 or response.headers.get(REQUESTS_HEADER) != "0" or left_s <= 0:
                return response
            await self.waiters.wait(device_id, left_s)
            if self.waiters.closed:
                return response

    def close(self) -> None:
        """The node is stopping: open polls answer now (any thread)."""
        self.waiters.close()

    # -- operations -------------------------------------------------------------------------

    async def healthz(self, request: Request) -> HttpResponse:
        limited = self._health_limited(request)
        if limited is not None:
            return limited
        return _json(200, {"status": "alive"})

    async def readyz(self, request: Request) -> HttpResponse:
        limited = self._health_limited(request)
        if limited is not None:
            return limited
        checks = await run_in_threadpool(self.service.readiness)
        ready = all(v == "ok" for v in checks.values())
        return _json(200 if ready else 503, {"status": "ready" if ready else "not-ready", "checks": checks})

    async def tlog(self, request: Request) -> HttpResponse:
        """The transparency log's static resources (hq/tlog_serve.py): public, unauthenticated,
        rate limited per source like the health probes."""
        limited = self._health_limited(request)
        if limited is not None:
            return limited
        if self.tiles is None:
            return _json(404, {"error": {"code": "no-log", "message": "this node keeps no transparency log"}})
        response = await run_in_threadpool(self.tiles.get, request.url.path)
        self.metrics.request_done("tlog", response.status)
        return HttpResponse(content=response.body, status_code=response.status, headers=response.headers)

    def _health_limited(self, request: Request) -> HttpResponse | None:
        peer = request.client.host if request.client else "unknown"
        raw = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.scope["headers"]]
        wait = self.health_rate.take(source_of(peer, raw, self.settings.behind_proxy))
        if wait <= 0:
            return None
        err = ApiError(429, "rate-limited", "health probes too often from this address",
                       {"Retry-After": retry_after(wait)})
        return _http(error_response(err), close=False)


async def _read_body(request: Request, admission: Admission) -> bytes:
    """The body, exactly its declared length (the route's limit was checked before)."""
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > admission.length:  # h11 frames by Content-Length; this is a second fence
            raise ApiError(400, "long-body", "the body is longer than its Content-Length")
        chunks.append(chunk)
    if received != admission.length:
        raise ApiError(400, "short-body", "the connection closed before the whole body arrived")
    return b"".join(chunks)


def _declared_length(raw_headers: list[tuple[str, str]]) -> int:
    for name, value in raw_headers:
        if name.lower() == "content-length":
            return int(value) if value.strip().isdigit() else 1
        if name.lower() == "transfer-encoding":
            return 1
    return 0


def _http(response: Response, close: bool) -> HttpResponse:
    headers = {"Tus-Resumable": TUS_VERSION, **response.headers}
    if close:
        headers["Connection"] = "close"
    return HttpResponse(content=response.body, status_code=response.status, headers=headers)


def _json(status: int, doc: object) -> HttpResponse:
    return HttpResponse(json.dumps(doc, sort_keys=True).encode(), status, {"Content-Type": "application/json",
                                                                            "Cache-Control": "no-store"})


def _internal_error() -> bytes:
    return json.dumps({"error": {"code": "internal", "message": "internal error; see the service log"}}).encode()
