"""Signed documents of the sync protocol: headquarters' receipts and quarantine notices, and the
unit's heartbeat bodies.

Both ends use this module (docs/sync-protocol.md, "Receipts", "Quarantine notices" and
"Heartbeat"), so the bytes that are signed are built in exactly one place. A receipt is canonical
JSON followed by a 64-byte Ed25519 signature by ``receipt.key`` over ``CTX_RECEIPT || json``; a
quarantine notice is the same with ``CTX_QUARANTINE`` (another context, so neither can pass for
the other). A heartbeat body is canonical
JSON ``{"sig": <b64>, "status": {...}}`` whose ``sig`` is the device's Ed25519 signature over
``CTX_HEARTBEAT || canonical(status)``.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.evidence import canonical
from agent.evidence.format import SIGNATURE_LEN
from agent.evidence.keys import fingerprint, public_der, verify_signature
from hal.keystore import KeyStore

CTX_RECEIPT = b"bodycam/v1/receipt\x00"
CTX_HEARTBEAT = b"bodycam/v1/heartbeat\x00"
CTX_QUARANTINE = b"bodycam/v1/quarantine\x00"

MAX_RECEIPT_BYTES = 16 * 1024

_HEX64 = re.compile(r"^[0-9a-f]{64}$")

# Every receipt carries exactly these fields; ``hq_key`` is filled in by make_receipt.
RECEIPT_FIELDS = frozenset(
    {
        "device_id",
        "seq",
        "manifest_sha256",
        "file_sha256",
        "received_utc_ns",
        "chain_head",
        "contiguous_through",
        "hq_key",
    }
)


class ReceiptError(ValueError):
    """A receipt or heartbeat that is malformed, altered, or signed by another key."""


def _int(doc: Mapping[str, Any], key: str, minimum: int) -> int:
    value = doc.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ReceiptError(f"{key}: expected an integer >= {minimum}")
    return value


def _hex(doc: Mapping[str, Any], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not _HEX64.match(value):
        raise ReceiptError(f"{key}: expected a SHA-256 hex digest")
    return value


def check_receipt_fields(doc: Mapping[str, Any]) -> None:
    """Raise ReceiptError unless ``doc`` has exactly the receipt fields, each of the right type."""
    missing = sorted(RECEIPT_FIELDS - doc.keys())
    extra = sorted(doc.keys() - RECEIPT_FIELDS)
    if missing or extra:
        raise ReceiptError(f"receipt fields: missing {missing}, unexpected {extra}")
    if not isinstance(doc["device_id"], str) or not doc["device_id"]:
        raise ReceiptError("device_id: expected a non-empty string")
    _int(doc, "seq", 0)
    _hex(doc, "manifest_sha256")
    _hex(doc, "file_sha256")
    _int(doc, "received_utc_ns", 0)
    # -1 while headquarters does not yet hold seq 0 of the unit.
    _int(doc, "contiguous_through", -1)
    _hex(doc, "hq_key")
    head = doc["chain_head"]
    if not isinstance(head, Mapping) or set(head.keys()) != {"seq", "hash"}:
        raise ReceiptError("chain_head: expected {seq, hash}")
    _int(head, "seq", 0)
    _hex(head, "hash")


def receipt_key_id(public_key: ed25519.Ed25519PublicKey) -> str:
    """The ``hq_key`` value of receipts signed by this key: the SHA-256 of its DER public key."""
    return fingerprint(public_der(public_key))


def make_receipt(fields: Mapping[str, Any], signer_private_key: ed25519.Ed25519PrivateKey) -> bytes:
    """Canonical JSON of ``fields`` (``hq_key`` added from the signer) followed by its signature.

    ``fields`` holds every receipt field except ``hq_key``; passing ``hq_key`` is allowed if it
    names the signer. Raises ReceiptError if a field is missing, unexpected or of the wrong type.
    """
    return sign_doc(CTX_RECEIPT, "receipt", fields, check_receipt_fields, signer_private_key)


def verify_receipt(data: bytes, receipt_public_key: ed25519.Ed25519PublicKey) -> dict[str, Any]:
    """Check a receipt's signature, form and signer; return its fields.

    Raises ReceiptError when the bytes are too short or too long, the signature does not verify
    with ``receipt_public_key``, the JSON is not canonical, a field is wrong, or ``hq_key`` names
    another key. The caller still compares ``device_id``, ``seq`` and ``manifest_sha256`` with the
    entry it sent (``expect_receipt`` does all of it).
    """
    return open_signed_doc(CTX_RECEIPT, "receipt", data, check_receipt_fields, receipt_public_key)


def sign_doc(
    ctx: bytes,
    what: str,
    fields: Mapping[str, Any],
    check: Callable[[Mapping[str, Any]], None],
    signer_private_key: ed25519.Ed25519PrivateKey,
) -> bytes:
    doc = dict(fields)
    key_id = receipt_key_id(signer_private_key.public_key())
    if doc.setdefault("hq_key", key_id) != key_id:
        raise ReceiptError("hq_key does not name the signing key")
    check(doc)
    try:
        body = canonical.dumps(doc)
    except canonical.CanonicalError as exc:
        raise ReceiptError(f"{what} has no canonical form: {exc}") from exc
    return body + signer_private_key.sign(ctx + body)


def open_signed_doc(
    ctx: bytes,
    what: str,
    data: bytes,
    check: Callable[[Mapping[str, Any]], None],
    public_key: ed25519.Ed25519PublicKey,
) -> dict[str, Any]:
    if not SIGNATURE_LEN < len(data) <= MAX_RECEIPT_BYTES:
        raise ReceiptError(f"{what} is {len(data)} bytes: not a {what}")
    body, sig = data[:-SIGNATURE_LEN], data[-SIGNATURE_LEN:]
    if not verify_signature(public_key, sig, ctx + body):
        raise ReceiptError(f"{what} signature does not verify with the pinned receipt key")
    try:
        doc = canonical.loads(body)
    except canonical.CanonicalError as exc:
        raise ReceiptError(f"{what} body: {exc}") from exc
    if not isinstance(doc, dict):
        raise ReceiptError(f"{what} body is not a JSON object")
    check(doc)
    if doc["hq_key"] != receipt_key_id(public_key):
        raise ReceiptError(f"{what} names another headquarters key")
    return doc


def expect_receipt(
    data: bytes,
    receipt_public_key: ed25519.Ed25519PublicKey,
    device_id: str,
    seq: int,
    manifest_sha256: str,
) -> dict[str, Any]:
    """verify_receipt, then check that it acknowledges exactly this entry; return its fields."""
    doc = verify_receipt(data, receipt_public_key)
    for key, want in (("device_id", device_id), ("seq", seq), ("manifest_sha256", manifest_sha256)):
        if doc[key] != want:
            raise ReceiptError(f"receipt {key} is {doc[key]!r}, the entry sent has {want!r}")
    return doc


def decode_receipt_header(value: str, name: str = "Bodycam-Receipt") -> bytes:
    """The document bytes of a ``Bodycam-Receipt`` (or ``name``) header (standard base64)."""
    try:
        return base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ReceiptError(f"{name} header is not base64") from exc


def encode_receipt_header(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# -- quarantine notices ------------------------------------------------------------------------

# Every notice carries exactly these fields. ``file_sha256`` is the whole-file SHA-256 the unit
# announced (what it sent), ``received_sha256`` that of the bytes headquarters holds.
NOTICE_FIELDS = frozenset(
    {
        "device_id",
        "seq",
        "file_sha256",
        "received_sha256",
        "upload_id",
        "code",
        "reason",
        "quarantined_utc_ns",
        "hq_key",
    }
)
MAX_NOTICE_TEXT = 1000  # characters of ``code`` and ``reason``: enough to say why, bounded for the unit


def check_notice_fields(doc: Mapping[str, Any]) -> None:
    """Raise ReceiptError unless ``doc`` has exactly the notice fields, each of the right type."""
    missing = sorted(NOTICE_FIELDS - doc.keys())
    extra = sorted(doc.keys() - NOTICE_FIELDS)
    if missing or extra:
        raise ReceiptError(f"quarantine notice fields: missing {missing}, unexpected {extra}")
    for key in ("device_id", "upload_id", "code", "reason"):
        value = doc[key]
        if not isinstance(value, str) or not value or len(value) > MAX_NOTICE_TEXT:
            raise ReceiptError(f"{key}: expected a non-empty string of at most {MAX_NOTICE_TEXT} characters")
    _int(doc, "seq", 0)
    _hex(doc, "file_sha256")
    _hex(doc, "received_sha256")
    _int(doc, "quarantined_utc_ns", 0)
    _hex(doc, "hq_key")


def make_quarantine_notice(fields: Mapping[str, Any], signer_private_key: ed25519.Ed25519PrivateKey) -> bytes:
    """Headquarters' signed word that it quarantined an upload: like :func:`make_receipt`, with
    :data:`NOTICE_FIELDS` and ``CTX_QUARANTINE``."""
    return sign_doc(CTX_QUARANTINE, "quarantine notice", fields, check_notice_fields, signer_private_key)


def expect_quarantine_notice(
    data: bytes,
    receipt_public_key: ed25519.Ed25519PublicKey,
    device_id: str,
    seq: int,
    file_sha256: str,
) -> dict[str, Any]:
    """The notice's fields when it is signed by ``receipt_public_key`` and names exactly this
    upload (device, seq and the whole-file SHA-256 the unit sent); otherwise ReceiptError."""
    doc = open_signed_doc(CTX_QUARANTINE, "quarantine notice", data, check_notice_fields, receipt_public_key)
    for key, want in (("device_id", device_id), ("seq", seq), ("file_sha256", file_sha256)):
        if doc[key] != want:
            raise ReceiptError(f"quarantine notice {key} is {doc[key]!r}, the upload sent has {want!r}")
    return doc


# -- heartbeat bodies --------------------------------------------------------------------------


def make_heartbeat(status: Mapping[str, Any], signer: KeyStore) -> bytes:
    """The canonical body of ``POST /v1/heartbeat``: the status and the device's signature over it."""
    return sign_device_doc(CTX_HEARTBEAT, "heartbeat", "status", status, signer)


def verify_heartbeat(body: bytes, device_public_key: ed25519.Ed25519PublicKey) -> dict[str, Any]:
    """Check a heartbeat body's form and inner signature; return the status object."""
    return open_device_doc(CTX_HEARTBEAT, "heartbeat", "status", body, device_public_key)


def sign_device_doc(ctx: bytes, what: str, member: str, doc: Mapping[str, Any], signer: KeyStore) -> bytes:
    """``{member: doc, "sig": <b64>}`` in canonical JSON, ``sig`` the device's signature over
    ``ctx || canonical(doc)`` (a heartbeat's status, a request's result)."""
    try:
        doc_bytes = canonical.dumps(dict(doc))
    except canonical.CanonicalError as exc:
        raise ReceiptError(f"{what} {member} has no canonical form: {exc}") from exc
    sig = base64.b64encode(signer.sign(ctx + doc_bytes)).decode("ascii")
    return canonical.dumps({"sig": sig, member: dict(doc)})


def open_device_doc(
    ctx: bytes, what: str, member: str, body: bytes, device_public_key: ed25519.Ed25519PublicKey
) -> dict[str, Any]:
    """Check a :func:`sign_device_doc` body's form and signature; return the ``member`` object."""
    try:
        outer = canonical.loads(body)
    except canonical.CanonicalError as exc:
        raise ReceiptError(f"{what} body: {exc}") from exc
    if not isinstance(outer, dict) or set(outer.keys()) != {"sig", member}:
        raise ReceiptError(f'{what} body must be {{"sig": ..., "{member}": {{...}}}}')
    doc, sig_b64 = outer[member], outer["sig"]
    if not isinstance(doc, dict) or not isinstance(sig_b64, str):
        raise ReceiptError(f"{what} {member} must be an object and sig a string")
    try:
        sig = base64.b64decode(sig_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ReceiptError(f"{what} sig is not base64") from exc
    if not verify_signature(device_public_key, sig, ctx + canonical.dumps(doc)):
        raise ReceiptError(f"{what} signature does not verify with the device key")
    return doc
