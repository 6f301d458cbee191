"""Signed documents of headquarters' request channel (docs/sync-protocol.md, "Requests from
headquarters"): a request headquarters signs for one unit, and the result the unit signs back.

Both ends use this module, so the signed bytes are built in one place. A request is canonical
JSON followed by a 64-byte Ed25519 signature by headquarters' ``receipt.key`` over
``CTX_REQUEST || json`` (the key the unit already pins for receipts; another context, so a
request can never pass for a receipt or a notice). A result body is canonical JSON
``{"result": {...}, "sig": <b64>}`` whose ``sig`` is the device's Ed25519 signature over
``CTX_RESULT || canonical(result)``, like a heartbeat body.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Iterator, Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.evidence.receipt import ReceiptError, open_device_doc, open_signed_doc, sign_device_doc, sign_doc
from hal.keystore import KeyStore

CTX_REQUEST = b"bodycam/v1/request\x00"
CTX_RESULT = b"bodycam/v1/request-result\x00"

REQUEST_FIELDS = frozenset(
    {"request_id", "device_id", "kind", "params", "issued_utc_ns", "expires_utc_ns", "requested_by", "hq_key"}
)
RESULT_FIELDS = frozenset(
    {"request_id", "device_id", "kind", "request_sha256", "outcome", "detail", "finished_utc_ns"}
)
# done: carried out in full; partial: carried out for what was there (the detail says what);
# refused: not carried out (not signed by headquarters, expired, another unit's, a kind the unit
# does not have, parameters it will not take); failed: tried and could not.
OUTCOMES = ("done", "partial", "refused", "failed")
MAX_TEXT = 200  # characters of an id, kind or pseudonym
MAX_RESULT_BYTES = 64 * 1024

REQUEST_ID = re.compile(r"^[0-9a-f]{32}$")
KIND = re.compile(r"^[a-z][a-z0-9_-]{0,30}(\.[a-z][a-z0-9_-]{0,30}){0,3}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class RequestDocError(ReceiptError):
    """A request or result that is malformed, altered, or signed by another key."""


def _int(doc: Mapping[str, Any], key: str) -> int:
    value = doc.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise RequestDocError(f"{key}: expected an integer >= 0")
    return value


def _text(doc: Mapping[str, Any], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
        raise RequestDocError(f"{key}: expected a non-empty string of at most {MAX_TEXT} characters")
    return value


def _fields(doc: Mapping[str, Any], wanted: frozenset[str], what: str) -> None:
    missing = sorted(wanted - doc.keys())
    extra = sorted(doc.keys() - wanted)
    if missing or extra:
        raise RequestDocError(f"{what} fields: missing {missing}, unexpected {extra}")
    if not REQUEST_ID.match(str(doc["request_id"])):
        raise RequestDocError("request_id: expected 32 lower-case hex digits")
    if not isinstance(doc["kind"], str) or not KIND.match(doc["kind"]):
        raise RequestDocError("kind: expected dotted lower-case names (background.upload)")
    _text(doc, "device_id")


def check_request_fields(doc: Mapping[str, Any]) -> None:
    """Raise RequestDocError unless ``doc`` has exactly the request fields, each of the right type."""
    _fields(doc, REQUEST_FIELDS, "request")
    if not isinstance(doc["params"], dict):
        raise RequestDocError("params: expected an object")
    issued, expires = _int(doc, "issued_utc_ns"), _int(doc, "expires_utc_ns")
    if expires <= issued:
        raise RequestDocError("expires_utc_ns: expected after issued_utc_ns")
    _text(doc, "requested_by")
    if not isinstance(doc["hq_key"], str) or not _HEX64.match(doc["hq_key"]):
        raise RequestDocError("hq_key: expected a SHA-256 hex digest")


def check_result_fields(doc: Mapping[str, Any]) -> None:
    """Raise RequestDocError unless ``doc`` has exactly the result fields, each of the right type."""
    _fields(doc, RESULT_FIELDS, "result")
    if doc["outcome"] not in OUTCOMES:
        raise RequestDocError(f"outcome: expected one of {', '.join(OUTCOMES)}")
    if not isinstance(doc["detail"], dict):
        raise RequestDocError("detail: expected an object")
    if not isinstance(doc["request_sha256"], str) or not _HEX64.match(doc["request_sha256"]):
        raise RequestDocError("request_sha256: expected a SHA-256 hex digest")
    _int(doc, "finished_utc_ns")


def make_request(fields: Mapping[str, Any], hq_private_key: ed25519.Ed25519PrivateKey) -> bytes:
    """Headquarters' signed request: canonical JSON of ``fields`` (``hq_key`` added) and its signature."""
    with _as_request_error():
        return sign_doc(CTX_REQUEST, "request", fields, check_request_fields, hq_private_key)


def open_request(data: bytes, hq_public_key: ed25519.Ed25519PublicKey) -> dict[str, Any]:
    """Check a request's signature (headquarters' pinned receipt key), form and signer; its fields."""
    with _as_request_error():
        return open_signed_doc(CTX_REQUEST, "request", data, check_request_fields, hq_public_key)


@contextlib.contextmanager
def _as_request_error() -> Iterator[None]:
    """The receipt module's errors as this module's one exception type."""
    try:
        yield
    except RequestDocError:
        raise
    except ReceiptError as exc:
        raise RequestDocError(str(exc)) from exc


def request_sha256(data: bytes) -> str:
    """What a result names the request by: the SHA-256 of the signed request's bytes."""
    return hashlib.sha256(data).hexdigest()


def make_result(result: Mapping[str, Any], signer: KeyStore) -> bytes:
    """The unit's signed result: ``{"result": ..., "sig": ...}`` in canonical JSON."""
    check_result_fields(result)
    return sign_device_doc(CTX_RESULT, "result", "result", result, signer)


def open_result(body: bytes, device_public_key: ed25519.Ed25519PublicKey) -> dict[str, Any]:
    """Check a result body's form and the device's signature; the result's fields."""
    if len(body) > MAX_RESULT_BYTES:
        raise RequestDocError(f"a result of {len(body)} bytes is longer than {MAX_RESULT_BYTES}")
    with _as_request_error():
        result = open_device_doc(CTX_RESULT, "result", "result", body, device_public_key)
    check_result_fields(result)
    return result
