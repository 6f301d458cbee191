"""The HTTP client for headquarters: tus 1.0 uploads and heartbeats over TLS pinned to the HQ CA,
every request signed with the device key (RFC 9421), per docs/sync-protocol.md."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import json
import logging
import re
import select
import socket
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

from agent.evidence.httpsig import sign_request
from agent.sync.deadline import Deadline
from agent.sync.errors import (
    AuthError,
    ChecksumMismatch,
    ConfigurationError,
    ConflictError,
    GoneError,
    OffsetMismatch,
    ProtocolError,
    RejectedError,
    SyncError,
    TransientError,
)
from hal.clock import Clock
from hal.keystore import KeyStore

__all__ = [
    "AuthError",
    "ChecksumMismatch",
    "ConfigurationError",
    "ConflictError",
    "GoneError",
    "OffsetMismatch",
    "ProtocolError",
    "RejectedError",
    "SyncError",
    "TransientError",
    "AppendResult", "HqClient", "Timeouts", "UploadInfo", "tls_context", "upload_metadata",
]

log = logging.getLogger(__name__)

TUS_VERSION = "1.0.0"
UPLOADS_PATH = "v1/uploads/"
HEARTBEAT_PATH = "v1/heartbeat"
REQUESTS_PATH = "v1/requests"
MAX_ANSWER_BYTES = 256 * 1024  # an answer body bigger than this is not from our headquarters
MAX_ERROR_TEXT = 200  # characters of an unsigned error code or message kept for logs, audit and status
QUARANTINE_HEADER = "bodycam-quarantine"  # the signed notice on a 422 (docs/sync-protocol.md)
INGEST_HEADER = "bodycam-ingest"  # "pending": every byte is held, the receipt comes later (1.3)
SEND_SLICE_BYTES = 16 * 1024  # how much of a chunk goes to the socket between bandwidth checks

Pace = Callable[[int], None]  # called before sending n bytes; may wait, or raise to abandon the send


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: Mapping[str, str]  # lowercase names
    body: bytes


@dataclass(frozen=True, slots=True)
class UploadInfo:
    """After a HEAD. ``ingest_pending``: headquarters holds every byte and is still verifying
    and storing the file (``Bodycam-Ingest: pending``, 1.3)."""

    offset: int
    length: int
    ingest_pending: bool = False


@dataclass(frozen=True, slots=True)
class AppendResult:
    """After a PATCH: headquarters' new offset, and the receipt (base64) if this completed it,
    or ``ingest_pending`` when it completed it and ingest outlasted headquarters' wait (1.3)."""

    offset: int
    receipt_b64: str | None
    ingest_pending: bool = False
    tlog_b64: str | None = None  # the receipt's inclusion proof in headquarters' log (1.5)


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds. ``connect_s`` to set up TCP; ``io_s`` for any one read or write; ``ingest_s``
    for the answer to the last chunk, which headquarters gives only after verifying the file.

    ``request_s`` is the overall deadline of one request: connect, TLS, sending the body, the
    answer's headers and body, all together (per-read timeouts alone let a peer that trickles
    one byte at a time hold the sync thread for ever). The last chunk's request gets
    ``ingest_s`` more, and a chunk held back by the bandwidth cap the time the cap needs. The
    default, 120 s, carries a 1 MiB chunk over an uplink down to about 70 kbit/s.
    """

    connect_s: float = 10.0
    io_s: float = 30.0
    ingest_s: float = 120.0
    request_s: float = 120.0


def tls_context(ca_path: Path) -> ssl.SSLContext:
    """TLS 1.3 with headquarters' CA as the only trust anchor, host names checked."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_verify_locations(cafile=str(ca_path))
    except (OSError, ssl.SSLError) as e:
        raise ConfigurationError(f"Loading headquarters CA {ca_path}: {e}") from e
    return ctx


def upload_metadata(pairs: Mapping[str, str]) -> str:
    """tus ``Upload-Metadata``: ``key b64,key b64``."""
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in pairs.items())


WHIP_PATH = "v1/live/whip"  # relative to headquarters' base URL (docs/sync-protocol.md, live view)


class HqClient:
    """One keep-alive HTTPS connection to headquarters, opened on demand.

    Not thread-safe: one sync worker thread owns it (only :meth:`abort` may come from another
    thread). Every request carries ``Tus-Resumable``
    and an RFC 9421 signature by the device key; answers are checked against the protocol and
    failures raised as the :class:`SyncError` subclass that says what the caller should do.
    """

    def __init__(
        self,
        base_url: str,
        ca_path: Path,
        device_id: str,
        keystore: KeyStore,
        clock: Clock,
        timeouts: Timeouts = Timeouts(),
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "https" or not parts.hostname:
            raise ConfigurationError(f"Headquarters URL {base_url!r} is not https://HOST[:PORT][/PREFIX]")
        self._base = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}/"
        self._origin = (parts.scheme, parts.hostname, parts.port or 443)
        self._ctx = tls_context(ca_path)
        self._device_id = device_id
        self._keystore = keystore
        self._clock = clock
        self._timeouts = timeouts
        self._conn: http.client.HTTPSConnection | None = None
        self._idle_since_s = 0.0  # time.monotonic() when the kept-alive connection last answered
        self._aborted = False  # abort() was called during the current request

    @property
    def uploads_url(self) -> str:
        return urljoin(self._base, UPLOADS_PATH)

    def close(self) -> None:
        """Drop the connection (the next request opens a new one); idempotent."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def abort(self) -> None:
        """From another thread: make a request blocked on the network fail now."""
        self._aborted = True
        conn = self._conn
        sock = None if conn is None else conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):  # already closed
                sock.shutdown(socket.SHUT_RDWR)

    # ---- tus --------------------------------------------------------------------------------

    def create(self, length: int, metadata: Mapping[str, str]) -> str:
        """POST: a new upload (or the existing one for the same file); return its absolute URL."""
        doing = f"Creating upload of {metadata.get('filename', '?')}"
        answer = self._request("POST", self.uploads_url, doing,
                               {"Upload-Length": str(length), "Upload-Metadata": upload_metadata(metadata)})
        if answer.status == 409:
            raise ConflictError(f"{doing}: headquarters holds a different file for this seq "
                                f"({_error_text(answer)})", 409)
        self._expect(doing, answer, (200, 201))
        location = answer.headers.get("location")
        if not location:
            raise ProtocolError(f"{doing}: answer {answer.status} without Location", answer.status)
        return self.resolve(location, doing)

    def head(self, url: str) -> UploadInfo:
        """HEAD: headquarters' offset and length of an upload."""
        doing = f"Asking the offset of {url}"
        answer = self._request("HEAD", url, doing, {})
        if answer.status in (404, 410):
            raise GoneError(f"{doing}: headquarters does not know it ({answer.status})", answer.status)
        self._expect(doing, answer, (200, 204))
        offset = _int_header(answer, "upload-offset", doing)
        length = _int_header(answer, "upload-length", doing)
        if not 0 <= offset <= length:
            raise ProtocolError(f"{doing}: offset {offset} outside 0..{length}", answer.status)
        return UploadInfo(offset, length, _ingest_pending(answer))

    def append(
        self, url: str, offset: int, chunk: bytes, *, last: bool, pace: Pace | None = None, paced_s: float = 0.0
    ) -> AppendResult:
        """PATCH one chunk at ``offset``; ``last`` when it reaches the end (waits for ingest).
        ``paced_s``: how long ``pace`` may hold the body back in all, added to the deadline."""
        doing = f"Sending {len(chunk)} bytes at {offset} to {url}"
        headers = {
            "Content-Type": "application/offset+octet-stream",
            "Upload-Offset": str(offset),
            "Upload-Checksum": "sha256 " + base64.b64encode(hashlib.sha256(chunk).digest()).decode(),
        }
        timeout = self._timeouts.ingest_s if last else self._timeouts.io_s
        extra_s = paced_s + (self._timeouts.ingest_s if last else 0.0)
        # Not sent again on a failed connection: headquarters may have kept part of the chunk, and
        # the worker resumes from headquarters' offset (HEAD) as after any cut.
        answer = self._request("PATCH", url, doing, headers, chunk, timeout_s=timeout, pace=pace, extra_s=extra_s,
                               resend=False)
        if answer.status == 409:
            raise OffsetMismatch(f"{doing}: headquarters is at another offset", 409)
        if answer.status == 460:
            raise ChecksumMismatch(f"{doing}: checksum mismatch, headquarters discarded the chunk", 460)
        if answer.status in (404, 410):
            raise GoneError(f"{doing}: headquarters does not know the upload ({answer.status})", answer.status)
        if answer.status == 422:
            code, message = _error_fields(answer)
            raise RejectedError(f"{doing}: headquarters says it quarantined it: {code}: {message}", 422, code,
                                message, answer.headers.get(QUARANTINE_HEADER))
        self._expect(doing, answer, (200, 204))
        new_offset = _int_header(answer, "upload-offset", doing)
        if new_offset != offset + len(chunk):
            raise ProtocolError(
                f"{doing}: headquarters answered offset {new_offset}, expected {offset + len(chunk)}", answer.status)
        return AppendResult(new_offset, answer.headers.get("bodycam-receipt"), _ingest_pending(answer),
                            answer.headers.get("bodycam-tlog-inclusion"))

    def terminate(self, url: str) -> None:
        """DELETE: abandon an upload at headquarters."""
        doing = f"Terminating {url}"
        answer = self._request("DELETE", url, doing, {})
        if answer.status not in (404, 410):
            self._expect(doing, answer, (200, 204))

    # ---- heartbeat -------------------------------------------------------------------------

    def heartbeat(self, body: bytes, tlog_size: int = 0) -> dict[str, Any]:
        """POST /v1/heartbeat with a canonical JSON body; return headquarters' JSON answer.
        ``tlog_size``: the size of the log's checkpoint the unit kept (1.5)."""
        doing = "Sending heartbeat"
        headers = {"Content-Type": "application/json"}
        if tlog_size:
            headers["Bodycam-Tlog-Size"] = str(tlog_size)
        answer = self._request("POST", urljoin(self._base, HEARTBEAT_PATH), doing, headers, body)
        self._expect(doing, answer, (200,))
        try:
            reply = json.loads(answer.body)
        except ValueError as e:
            raise ProtocolError(f"{doing}: answer is not JSON", answer.status) from e
        if not isinstance(reply, dict) or reply.get("ok") is not True:
            raise ProtocolError(f"{doing}: answer is not ok: {answer.body[:200]!r}", answer.status)
        return reply

    # ---- live view: WHIP (RFC 9725) ----------------------------------------------------------

    def whip_publish(self, offer_sdp: str) -> tuple[str, str]:
        """POST the SDP offer to headquarters' WHIP endpoint: (answer SDP, resource URL)."""
        doing = "Offering live view"
        # Not sent twice: a first copy that arrived would hold a stream resource no one ends.
        answer = self._request("POST", urljoin(self._base, WHIP_PATH), doing,
                               {"Content-Type": "application/sdp"}, offer_sdp.encode(), resend=False)
        self._expect(doing, answer, (201,))
        location = answer.headers.get("location", "")
        url = urljoin(urljoin(self._base, WHIP_PATH), location)
        parts = urlsplit(url)
        if not location or (parts.scheme, parts.hostname, parts.port or 443) != self._origin \
                or not parts.path.startswith(urlsplit(urljoin(self._base, WHIP_PATH)).path + "/"):
            raise ProtocolError(f"{doing}: Location {_clip(location)!r} is not a WHIP resource of headquarters")
        if not answer.headers.get("content-type", "").startswith("application/sdp"):
            raise ProtocolError(f"{doing}: the answer is not application/sdp", answer.status)
        return answer.body.decode("utf-8", "replace"), url

    def whip_ice(self) -> list[dict[str, str]]:
        """OPTIONS on the WHIP endpoint: the ICE servers headquarters offers this unit (RFC 9725
        section 4.6 ``Link: <turn:...>; rel="ice-server"``), as {url, username, credential}."""
        doing = "Asking for live view's ICE servers"
        answer = self._request("OPTIONS", urljoin(self._base, WHIP_PATH), doing, {})
        self._expect(doing, answer, (200, 204))
        return parse_ice_links(answer.headers.get("link", ""))

    def whip_delete(self, resource_url: str) -> None:
        """DELETE the WHIP resource: the stream is over."""
        doing = "Ending live view"
        answer = self._request("DELETE", resource_url, doing, {})
        if answer.status not in (404, 410):
            self._expect(doing, answer, (200, 204))

    # ---- requests from headquarters (docs/sync-protocol.md, 1.6) -----------------------------

    def poll_requests(self, wait_s: int) -> list[bytes]:
        """GET /v1/requests?wait_s=N: the signed requests headquarters has for this unit (not yet
        checked: :mod:`agent.sync.requests` does), waiting up to ``wait_s`` for one to come."""
        doing = "Asking headquarters for requests"
        answer = self._request("GET", urljoin(self._base, f"{REQUESTS_PATH}?wait_s={wait_s}"), doing, {},
                               extra_s=float(wait_s))
        self._expect(doing, answer, (200,))
        try:
            reply = json.loads(answer.body)
            encoded = reply["requests"]
            if not isinstance(encoded, list) or not all(isinstance(e, str) for e in encoded):
                raise TypeError("requests is not a list of strings")
            return [base64.b64decode(e, validate=True) for e in encoded]
        except (ValueError, KeyError, TypeError) as e:
            raise ProtocolError(f"{doing}: the answer is not a list of requests", answer.status) from e

    def post_result(self, body: bytes) -> None:
        """POST /v1/requests: this unit's signed result of one request."""
        doing = "Sending a request's result"
        answer = self._request("POST", urljoin(self._base, REQUESTS_PATH), doing,
                               {"Content-Type": "application/json"}, body)
        self._expect(doing, answer, (200,))  # a 400 (headquarters will not keep it) is a ProtocolError

    # ---- plumbing --------------------------------------------------------------------------

    def resolve(self, location: str, doing: str) -> str:
        """An upload URL from a Location, refused unless it names one upload under headquarters'
        own uploads URL (same origin, one path segment below it, no query)."""
        url = urljoin(self.uploads_url, location)
        parts = urlsplit(url)
        if (parts.scheme, parts.hostname, parts.port or 443) != self._origin:
            raise ProtocolError(f"{doing}: Location {_clip(location)!r} points away from headquarters")
        prefix = urlsplit(self.uploads_url).path
        name = parts.path[len(prefix):] if parts.path.startswith(prefix) else ""
        if not name or "/" in name or name in (".", "..") or parts.query or parts.fragment:
            raise ProtocolError(f"{doing}: Location {_clip(location)!r} is not an upload of headquarters")
        return url

    @staticmethod
    def _expect(doing: str, answer: Answer, ok: tuple[int, ...]) -> None:
        if answer.status in ok:
            return
        if answer.status in (401, 403):
            date = answer.headers.get("date")
            hint = f"; headquarters' clock says {_clip(date, 64)}" if date else ""
            raise AuthError(f"{doing}: refused {answer.status} ({_error_text(answer)}){hint}", answer.status)
        if answer.status >= 500 or answer.status in (408, 429):
            raise TransientError(f"{doing}: headquarters answered {answer.status} ({_error_text(answer)})",
                                 answer.status)
        raise ProtocolError(f"{doing}: unexpected answer {answer.status} ({_error_text(answer)})", answer.status)

    def _connection(self, timeout_s: float) -> http.client.HTTPSConnection:
        if self._conn is None:
            _, host, port = self._origin
            conn = http.client.HTTPSConnection(host, port, timeout=self._timeouts.connect_s, context=self._ctx)
            self._conn = conn
            # TCP and TLS by hand rather than conn.connect(): the TLS socket is in place before its
            # handshake, so abort() (a stop, or the request's deadline) can break a stalled one.
            raw = socket.create_connection((host, port), self._timeouts.connect_s)
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            tls = self._ctx.wrap_socket(raw, server_hostname=host, do_handshake_on_connect=False)
            conn.sock = tls
            tls.do_handshake()
        self._conn.timeout = timeout_s
        if self._conn.sock is not None:
            self._conn.sock.settimeout(timeout_s)
        return self._conn

    def _request(
        self,
        method: str,
        url: str,
        doing: str,
        headers: dict[str, str],
        body: bytes = b"",
        *,
        timeout_s: float | None = None,
        pace: Pace | None = None,
        extra_s: float = 0.0,
        resend: bool = True,
    ) -> Answer:
        """One request and its answer within the overall deadline (``Timeouts.request_s`` plus
        ``extra_s``); the answer's body is read up to :data:`MAX_ANSWER_BYTES`.

        A kept-alive connection that headquarters (or a load balancer, or a NAT on the way) closed
        while it was idle fails the next request sent on it before any byte of an answer comes:
        that request is sent once more, signed anew (a fresh nonce), on a fresh connection, within
        what is left of the deadline (docs/sync-protocol.md, "Connections"), unless not ``resend``."""
        self._aborted = False
        seconds = self._timeouts.request_s + extra_s
        started_s = time.monotonic()
        idle_s = started_s - self._idle_since_s
        if self._conn is not None and _dropped(self._conn.sock):
            log.debug("the kept-alive connection to headquarters was closed after %.1f s idle; opening another",
                      idle_s)
            self.close()
        reused = self._conn is not None
        first = self._attempt(method, url, doing, headers, body, timeout_s, pace, seconds)
        if isinstance(first, Answer):
            return first
        left_s = seconds - (time.monotonic() - started_s)
        if not (resend and reused) or self._aborted or left_s <= 0:
            raise TransientError(f"{doing}: {_describe(first.cause)}") from first.cause
        log.info("%s: the kept-alive connection (idle %.1f s) failed before any answer (%s); "
                 "sending once more on a fresh connection", doing, idle_s, _describe(first.cause))
        second = self._attempt(method, url, doing, headers, body, timeout_s, pace, left_s)
        if isinstance(second, Answer):
            return second
        raise TransientError(f"{doing}: {_describe(second.cause)}") from second.cause

    def _attempt(self, method: str, url: str, doing: str, headers: dict[str, str], body: bytes,
                 timeout_s: float | None, pace: Pace | None, seconds: float) -> Answer | _Unanswered:
        """Send the request once, freshly signed: the answer, or :class:`_Unanswered` when the
        connection failed before any byte of the answer came; other failures raise
        :class:`TransientError`."""
        target = urlsplit(url)
        path = target.path + (f"?{target.query}" if target.query else "")
        headers = {"Tus-Resumable": TUS_VERSION, **headers}
        headers.update(sign_request(method, url, headers, body, self._device_id, self._keystore,
                                    self._clock.utc_ns() // 1_000_000_000))
        headers["Content-Length"] = str(len(body))
        deadline = Deadline(seconds, self.abort)
        phase = "sending"  # then "waiting" for the status line, then "reading" the answer
        try:
            with deadline:
                conn = self._connection(self._timeouts.io_s if timeout_s is None else timeout_s)
                payload: bytes | Iterator[bytes] = body if pace is None or not body else _paced(body, pace)
                conn.request(method, path, body=payload, headers=headers)
                phase = "waiting"
                resp = conn.getresponse()
                phase = "reading"
                data = resp.read(MAX_ANSWER_BYTES + 1)
            answer = Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
            if deadline.expired:
                raise http.client.IncompleteRead(data)  # whatever came was cut off at the deadline
            if len(data) > MAX_ANSWER_BYTES:
                self.close()
                raise ProtocolError(f"{doing}: answer larger than {MAX_ANSWER_BYTES} bytes", resp.status)
            if resp.length:  # read(n) returns a body cut short by the peer without complaint
                raise http.client.IncompleteRead(data, resp.length)
            if resp.will_close:
                self.close()
            self._idle_since_s = time.monotonic()
        except (OSError, http.client.HTTPException) as e:
            self.close()
            if deadline.expired:
                raise TransientError(f"{doing}: no complete answer within the {seconds:g} s deadline") from e
            if phase != "reading" and _before_answer(e, sent=phase == "waiting"):
                return _Unanswered(e)
            raise TransientError(f"{doing}: {_describe(e)}") from e
        except BaseException:
            self.close()  # an abandoned send (stop requested mid-chunk) leaves the stream unusable
            raise
        return answer


_LINK = re.compile(r'<([^>]{1,255})>((?:\s*;\s*[a-z-]+="(?:[^"\\]|\\.)*")*)')
_LINK_PARAM = re.compile(r'([a-z-]+)="((?:[^"\\]|\\.)*)"')


def parse_ice_links(header: str) -> list[dict[str, str]]:
    """The ``rel="ice-server"`` links of a ``Link`` header (RFC 9725 section 4.6), at most 8."""
    out = []
    for m in _LINK.finditer(header):
        params = {k: re.sub(r"\\(.)", r"\1", v) for k, v in _LINK_PARAM.findall(m.group(2))}
        if params.get("rel") == "ice-server" and m.group(1).split(":", 1)[0] in ("stun", "turn", "turns"):
            out.append({"url": m.group(1), "username": params.get("username", ""),
                        "credential": params.get("credential", "")})
    return out[:8]


@dataclass(frozen=True, slots=True)
class _Unanswered:
    """A request's connection failed (``cause``) before any byte of an answer came."""

    cause: OSError | http.client.HTTPException


def _before_answer(e: OSError | http.client.HTTPException, *, sent: bool) -> bool:
    """Did the connection fail before any byte of the answer came? Sending failed (refused,
    reset, EOF, broken pipe), or, once ``sent``, it closed or reset before the status line. A
    timeout is not such a failure: headquarters may be working on the request."""
    if isinstance(e, TimeoutError | ssl.SSLCertVerificationError):
        return False
    if isinstance(e, http.client.RemoteDisconnected):  # closed before the status line
        return True
    if not sent:
        return isinstance(e, OSError)
    return isinstance(e, ConnectionError | ssl.SSLEOFError | ssl.SSLZeroReturnError)


def _dropped(sock: socket.socket | None) -> bool:
    """Has the peer closed (or sent anything to) this idle connection? An idle HTTP/1.1
    connection has nothing to read, so anything readable is its end: a FIN, a reset, a TLS
    close_notify. The check urllib3 makes before it reuses a pooled connection."""
    if sock is None:
        return True
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    poller = select.poll()  # not select(): a unit's process may hold descriptors above 1023
    poller.register(sock, select.POLLIN | select.POLLPRI)
    try:
        return bool(poller.poll(0))
    except OSError:
        return True


def _paced(body: bytes, pace: Pace) -> Iterator[bytes]:
    view = memoryview(body)
    for start in range(0, len(view), SEND_SLICE_BYTES):
        piece = view[start:start + SEND_SLICE_BYTES]
        pace(len(piece))
        yield bytes(piece)


def _describe(e: BaseException) -> str:
    if isinstance(e, ssl.SSLCertVerificationError):
        return f"TLS certificate refused: {e.verify_message or e}"
    if isinstance(e, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(e, http.client.RemoteDisconnected):
        return "connection closed by the other end"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def _ingest_pending(answer: Answer) -> bool:
    return answer.headers.get(INGEST_HEADER, "").strip().lower() == "pending"


def _int_header(answer: Answer, name: str, doing: str) -> int:
    value = answer.headers.get(name)
    if value is None or not value.isdigit():
        raise ProtocolError(f"{doing}: answer {answer.status} with {name} {value!r}", answer.status)
    return int(value)


def _error_fields(answer: Answer) -> tuple[str, str]:
    """The (code, message) of an error body, printable and clipped: unsigned text from the network
    goes into logs, the audit trail and the status."""
    try:
        err = json.loads(answer.body)["error"]
        return _clip(str(err["code"])), _clip(str(err["message"]))
    except (ValueError, KeyError, TypeError):
        return "unknown", _clip(answer.body[:MAX_ERROR_TEXT].decode("utf-8", "replace"))


def _clip(text: str, limit: int = MAX_ERROR_TEXT) -> str:
    """``text`` with control characters made spaces and cut to ``limit`` characters."""
    clean = "".join(c if c.isprintable() else " " for c in text[:limit + 1])
    return clean if len(clean) <= limit else clean[:limit - 1] + "…"


def _error_text(answer: Answer) -> str:
    code, message = _error_fields(answer)
    return f"{code}: {message}" if answer.body else "no body"
