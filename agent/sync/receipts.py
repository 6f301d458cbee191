"""Checking headquarters' receipt for an upload before the entry may be marked acknowledged."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.evidence import canonical
from agent.evidence.format import SIGNATURE_LEN
from agent.evidence.keys import fingerprint, public_der, verify_signature

CTX_RECEIPT = b"bodycam/v1/receipt\x00"


class ReceiptRejected(Exception):
    """A receipt that proves nothing: unsigned, forged, malformed, or for another entry."""


@dataclass(frozen=True, slots=True)
class Sent:
    """What the unit sent, which the receipt must name."""

    device_id: str
    seq: int
    manifest_sha256: str
    file_sha256: str


def check_receipt(receipt_b64: str | None, receipt_key: ed25519.Ed25519PublicKey, sent: Sent) -> dict[str, Any]:
    """The receipt's fields when it is signed by the pinned receipt key and names ``sent``;
    otherwise :class:`ReceiptRejected` saying why."""
    if not receipt_b64:
        raise ReceiptRejected("no receipt with the completed upload")
    try:
        raw = base64.b64decode(receipt_b64, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ReceiptRejected("receipt is not base64") from e
    if len(raw) <= SIGNATURE_LEN:
        raise ReceiptRejected(f"receipt too short ({len(raw)} bytes)")
    body, sig = raw[:-SIGNATURE_LEN], raw[-SIGNATURE_LEN:]
    if not verify_signature(receipt_key, sig, CTX_RECEIPT + body):
        raise ReceiptRejected("receipt signature does not verify with the pinned receipt key (forged, "
                              "or signed by another headquarters)")
    try:
        fields = canonical.loads(body)
    except canonical.CanonicalError as e:
        raise ReceiptRejected(f"receipt body: {e}") from e
    if not isinstance(fields, dict):
        raise ReceiptRejected("receipt body is not a JSON object")
    expected: dict[str, Any] = {"device_id": sent.device_id, "seq": sent.seq,
                                "manifest_sha256": sent.manifest_sha256}
    if "file_sha256" in fields:
        expected["file_sha256"] = sent.file_sha256
    if "hq_key" in fields:
        expected["hq_key"] = fingerprint(public_der(receipt_key))
    for key, want in expected.items():
        if fields.get(key) != want:
            raise ReceiptRejected(f"receipt {key} is {fields.get(key)!r}, expected {want!r}")
    return {**fields, "raw_b64": receipt_b64}
