"""The HTTP client for headquarters: tus 1.0 uploads and heartbeats over TLS pinned to the HQ CA,
every request signed with the device key (RFC 9421), per docs/sync-protocol.md."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import json
import logging
import socket
import ssl
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

from agent.evidence.httpsig import sign_request
from hal.clock import Clock
from hal.keystore import KeyStore

log = logging.getLogger(__name__)

TUS_VERSION = "1.0.0"
UPLOADS_PATH = "v1/uploads/"
HEARTBEAT_PATH = "v1/heartbeat"
MAX_ANSWER_BYTES = 256 * 1024  # an answer body bigger than this is not from our headquarters
SEND_SLICE_BYTES = 16 * 1024  # how much of a chunk goes to the socket between bandwidth checks

Pace = Callable[[int], None]  # called before sending n bytes; may wait, or raise to abandon the send


class SyncError(Exception):
    """A request to headquarters failed; the message says what was being done and why.

    ``status`` is the HTTP status when headquarters answered (None for network failures).
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TransientError(SyncError):
    """Worth retrying later with backoff: no connection, a timeout, a TLS failure or a 5xx."""


class ConfigurationError(SyncError):
    """The unit's sync settings are unusable (no https URL, an unreadable CA file)."""


class AuthError(SyncError):
    """401 or 403: the unit is not enrolled, revoked, or its clock is too far off for HQ."""


class RejectedError(SyncError):
    """422: headquarters verified the file, found it bad and quarantined it."""

    def __init__(self, message: str, status: int, code: str, detail: str) -> None:
        super().__init__(message, status)
        self.code = code
        self.detail = detail


class ConflictError(SyncError):
    """409 on create: headquarters holds a different file for this seq."""


class GoneError(SyncError):
    """404 or 410: headquarters does not know this upload (expired or never created)."""


class OffsetMismatch(SyncError):
    """409 on append: the chunk did not start at headquarters' offset."""


class ChecksumMismatch(SyncError):
    """460: the chunk arrived altered; headquarters discarded it."""


class ProtocolError(SyncError):
    """An answer that breaks the protocol (a wrong offset, a missing header, another host)."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: Mapping[str, str]  # lowercase names
    body: bytes


@dataclass(frozen=True, slots=True)
class UploadInfo:
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class AppendResult:
    """After a PATCH: headquarters' new offset, and the receipt (base64) if this completed it."""

    offset: int
    receipt_b64: str | None


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds. ``connect_s`` to set up TCP and TLS; ``io_s`` for any one read or write; ``ingest_s``
    for the answer to the last chunk, which headquarters gives only after verifying the file."""

    connect_s: float = 10.0
    io_s: float = 30.0
    ingest_s: float = 120.0


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
        return UploadInfo(offset, length)

    def append(self, url: str, offset: int, chunk: bytes, *, last: bool, pace: Pace | None = None) -> AppendResult:
        """PATCH one chunk at ``offset``; ``last`` when it reaches the end (waits for ingest)."""
        doing = f"Sending {len(chunk)} bytes at {offset} to {url}"
        headers = {
            "Content-Type": "application/offset+octet-stream",
            "Upload-Offset": str(offset),
            "Upload-Checksum": "sha256 " + base64.b64encode(hashlib.sha256(chunk).digest()).decode(),
        }
        timeout = self._timeouts.ingest_s if last else self._timeouts.io_s
        answer = self._request("PATCH", url, doing, headers, chunk, timeout_s=timeout, pace=pace)
        if answer.status == 409:
            raise OffsetMismatch(f"{doing}: headquarters is at another offset", 409)
        if answer.status == 460:
            raise ChecksumMismatch(f"{doing}: checksum mismatch, headquarters discarded the chunk", 460)
        if answer.status in (404, 410):
            raise GoneError(f"{doing}: headquarters does not know the upload ({answer.status})", answer.status)
        if answer.status == 422:
            code, message = _error_fields(answer)
            raise RejectedError(f"{doing}: headquarters quarantined it: {code}: {message}", 422, code, message)
        self._expect(doing, answer, (200, 204))
        new_offset = _int_header(answer, "upload-offset", doing)
        if new_offset != offset + len(chunk):
            raise ProtocolError(
                f"{doing}: headquarters answered offset {new_offset}, expected {offset + len(chunk)}", answer.status)
        return AppendResult(new_offset, answer.headers.get("bodycam-receipt"))

    def terminate(self, url: str) -> None:
        """DELETE: abandon an upload at headquarters."""
        doing = f"Terminating {url}"
        answer = self._request("DELETE", url, doing, {})
        if answer.status not in (404, 410):
            self._expect(doing, answer, (200, 204))

    # ---- heartbeat -------------------------------------------------------------------------

    def heartbeat(self, body: bytes) -> dict[str, Any]:
        """POST /v1/heartbeat with a canonical JSON body; return headquarters' JSON answer."""
        doing = "Sending heartbeat"
        answer = self._request("POST", urljoin(self._base, HEARTBEAT_PATH), doing,
                               {"Content-Type": "application/json"}, body)
        self._expect(doing, answer, (200,))
        try:
            reply = json.loads(answer.body)
        except ValueError as e:
            raise ProtocolError(f"{doing}: answer is not JSON", answer.status) from e
        if not isinstance(reply, dict) or reply.get("ok") is not True:
            raise ProtocolError(f"{doing}: answer is not ok: {answer.body[:200]!r}", answer.status)
        return reply

    # ---- plumbing --------------------------------------------------------------------------

    def resolve(self, location: str, doing: str) -> str:
        """An upload URL from a Location, refused unless it is on headquarters' own origin."""
        url = urljoin(self.uploads_url, location)
        parts = urlsplit(url)
        if (parts.scheme, parts.hostname, parts.port or 443) != self._origin:
            raise ProtocolError(f"{doing}: Location {location!r} points away from headquarters")
        return url

    @staticmethod
    def _expect(doing: str, answer: Answer, ok: tuple[int, ...]) -> None:
        if answer.status in ok:
            return
        if answer.status in (401, 403):
            date = answer.headers.get("date")
            hint = f"; headquarters' clock says {date}" if date else ""
            raise AuthError(f"{doing}: refused {answer.status} ({_error_text(answer)}){hint}", answer.status)
        if answer.status >= 500 or answer.status in (408, 429):
            raise TransientError(f"{doing}: headquarters answered {answer.status} ({_error_text(answer)})",
                                 answer.status)
        raise ProtocolError(f"{doing}: unexpected answer {answer.status} ({_error_text(answer)})", answer.status)

    def _connection(self, timeout_s: float) -> http.client.HTTPSConnection:
        if self._conn is None:
            _, host, port = self._origin
            conn = http.client.HTTPSConnection(host, port, timeout=self._timeouts.connect_s, context=self._ctx)
            conn.connect()
            self._conn = conn
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
    ) -> Answer:
        target = urlsplit(url)
        path = target.path + (f"?{target.query}" if target.query else "")
        headers = {"Tus-Resumable": TUS_VERSION, **headers}
        headers.update(sign_request(method, url, headers, body, self._device_id, self._keystore,
                                    self._clock.utc_ns() // 1_000_000_000))
        headers["Content-Length"] = str(len(body))
        try:
            conn = self._connection(self._timeouts.io_s if timeout_s is None else timeout_s)
            payload: bytes | Iterator[bytes] = body if pace is None or not body else _paced(body, pace)
            conn.request(method, path, body=payload, headers=headers)
            resp = conn.getresponse()
            data = resp.read(MAX_ANSWER_BYTES + 1)
            answer = Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
            if len(data) > MAX_ANSWER_BYTES:
                self.close()
                raise ProtocolError(f"{doing}: answer larger than {MAX_ANSWER_BYTES} bytes", resp.status)
            if resp.will_close:
                self.close()
        except (OSError, http.client.HTTPException) as e:
            self.close()
            raise TransientError(f"{doing}: {_describe(e)}") from e
        except BaseException:
            self.close()  # an abandoned send (stop requested mid-chunk) leaves the stream unusable
            raise
        return answer


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


def _int_header(answer: Answer, name: str, doing: str) -> int:
    value = answer.headers.get(name)
    if value is None or not value.isdigit():
        raise ProtocolError(f"{doing}: answer {answer.status} with {name} {value!r}", answer.status)
    return int(value)


def _error_fields(answer: Answer) -> tuple[str, str]:
    try:
        err = json.loads(answer.body)["error"]
        return str(err["code"]), str(err["message"])
    except (ValueError, KeyError, TypeError):
        return "unknown", answer.body[:200].decode("utf-8", "replace")


def _error_text(answer: Answer) -> str:
    code, message = _error_fields(answer)
    return f"{code}: {message}" if answer.body else "no body"
