"""What headquarters decides about a request before reading a byte of its body. Pure.

From the request line and headers only: the operation (``HqService.route``: 404, 405), the
method the signature must cover (``X-HTTP-Method-Override``), the body's declared length (411,
413), header fields that must appear once (400), and the origin: ``@target-uri`` is built from
this service's configured public origin that the request's ``Host`` names, never from the
``Host`` itself, and a request naming another origin is refused 421 (security review, finding 4).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from agent.evidence.httpsig import COVERED_FIELDS, normalize_target_uri
from hq.errors import ApiError
from hq.service import HqService, Route

# Headers that must appear at most once: a second copy could make the two ends sign different bases.
SINGLE_HEADERS = (
    "host",
    "content-length",
    "content-type",
    "content-digest",
    "signature",
    "signature-input",
    "tus-resumable",
    "x-http-method-override",
    "x-forwarded-host",
    *COVERED_FIELDS,
)
METHOD_OVERRIDE = "x-http-method-override"
OVERRIDABLE = ("PATCH", "DELETE")  # tus clients behind proxies that pass only GET and POST


class OriginError(ValueError):
    """A ``--public-origin`` that is not ``https://HOST[:PORT]``."""


def parse_origin(text: str) -> str:
    """``https://Host:Port`` normalised (lower case, default port dropped, no path)."""
    parts = urlsplit(text)
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.path not in ("", "/") \
            or parts.query or parts.fragment or parts.username or parts.password:
        raise OriginError(f"--public-origin {text!r}: expected https://HOST[:PORT] (scheme and authority only)")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError as exc:
        raise OriginError(f"--public-origin {text!r}: the port is not a number from 1 to 65535") from exc
    return normalize_target_uri(f"{parts.scheme}://{parts.netloc}/").rstrip("/")


def loopback_origins(port: int) -> list[str]:
    """What a unit on this host may name a service listening on loopback ``port``."""
    return [f"https://{host}:{port}" for host in ("127.0.0.1", "localhost", "[::1]")]


class Origins:
    """This service's public origins; ``match`` maps a request's host to the one it names."""

    def __init__(self, origins: Iterable[str]) -> None:
        self.origins = [parse_origin(o) for o in origins]
        if not self.origins:
            raise OriginError("no public origin configured")

    def add(self, origin: str) -> None:
        """One more origin, for a relay set up after the service (a test's TCP proxy, say)."""
        self.origins.append(parse_origin(origin))

    def match(self, host: str) -> str | None:
        """The configured origin whose authority is ``host`` (as sent, any case), else None."""
        for origin in self.origins:
            scheme, authority = origin.split("://", 1)
            try:
                if urlsplit(normalize_target_uri(f"{scheme}://{host.strip()}/")).netloc == authority:
                    return origin
            except ValueError:  # a malformed port in Host
                return None
        return None


@dataclass(frozen=True, slots=True)
class Admission:
    """A request that passed the checks before its body: what to read and what to verify."""

    route: Route
    method: str  # the method the signature covers and the service acts on (override applied)
    target_uri: str  # the configured origin + the request's path and query
    length: int  # the body's declared length, at most route.max_body


def _headers(raw: Sequence[tuple[str, str]]) -> dict[str, str]:
    return {name.lower(): value for name, value in raw}


def check_request(
    method: str, path_and_query: str, raw_headers: Sequence[tuple[str, str]], origins: Origins, behind_proxy: bool
) -> Admission:
    """Everything decided before the body; raises ApiError with the status to answer."""
    headers = _headers(raw_headers)
    for name in SINGLE_HEADERS:
        if sum(1 for n, _ in raw_headers if n.lower() == name) > 1:
            raise ApiError(400, "duplicate-header", f"{name} appears more than once")
    acting = effective_method(method, headers.get(METHOD_OVERRIDE))
    route = HqService.route(acting, path_and_query.split("?", 1)[0])
    length = body_length(acting, headers, route.max_body)
    host = headers.get("x-forwarded-host") if behind_proxy and "x-forwarded-host" in headers else headers.get("host")
    if not host:
        raise ApiError(400, "missing-host", "the Host header is required")
    origin = origins.match(host)
    if origin is None:
        raise ApiError(421, "misdirected", "this service does not answer for that host: sign requests for "
                       f"{origins.origins[0]} (or another of its configured origins)")
    return Admission(route, acting, origin + path_and_query, length)


def effective_method(method: str, override: str | None) -> str:
    """The method acted on: ``X-HTTP-Method-Override`` only turns a POST into PATCH or DELETE."""
    if override is None:
        return method
    wanted = override.strip().upper()
    if method != "POST" or wanted not in OVERRIDABLE:
        raise ApiError(400, "bad-override",
                       f"X-HTTP-Method-Override may only turn a POST into {' or '.join(OVERRIDABLE)}")
    return wanted


def body_length(method: str, headers: dict[str, str], limit: int) -> int:
    """The declared body length, checked against the route's limit before anything is read."""
    if headers.get("transfer-encoding"):
        raise ApiError(411, "length-required", "send Content-Length; chunked transfer encoding is not supported")
    text = headers.get("content-length")
    if text is None:
        if method in ("POST", "PATCH"):
            raise ApiError(411, "length-required", "Content-Length is required")
        return 0
    if not text.strip().isdigit():
        raise ApiError(400, "bad-header", "Content-Length must be a non-negative integer")
    length = int(text)
    if length > limit:
        raise ApiError(413, "too-large", f"a body of {length} bytes exceeds this route's limit of {limit}")
    return length


def source_of(peer: str, headers: Sequence[tuple[str, str]], behind_proxy: bool) -> str:
    """The address a request comes from: behind a proxy, the last hop it names in X-Forwarded-For."""
    if behind_proxy:
        forwarded = [v for n, v in headers if n.lower() == "x-forwarded-for"]
        if forwarded:
            last = forwarded[-1].split(",")[-1].strip()
            if last:
                return last[:64]
    return peer
