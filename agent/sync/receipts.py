"""Checking headquarters' signed answers before they may move an entry: a receipt before it is
marked acknowledged, a quarantine notice before it is marked quarantined."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.evidence.receipt import ReceiptError, decode_receipt_header, expect_quarantine_notice, expect_receipt


@dataclass(frozen=True, slots=True)
class Sent:
    """What the unit sent, which the receipt must name."""

    device_id: str
    seq: int
    manifest_sha256: str
    file_sha256: str


def check_receipt(header: str | None, receipt_key: ed25519.Ed25519PublicKey, sent: Sent) -> dict[str, Any]:
    """The receipt's fields (and the header as ``raw_b64``, so it can be checked again later) when
    it is signed by the pinned receipt key and names exactly what was sent; otherwise
    :class:`ReceiptError` saying why."""
    if not header:
        raise ReceiptError("no receipt came with the completed upload")
    fields = expect_receipt(decode_receipt_header(header), receipt_key, sent.device_id, sent.seq,
                            sent.manifest_sha256)
    if fields["file_sha256"] != sent.file_sha256:
        raise ReceiptError(f"receipt file_sha256 is {fields['file_sha256']!r}, the file sent has {sent.file_sha256!r}")
    return {**fields, "raw_b64": header.strip()}


def check_notice(header: str | None, receipt_key: ed25519.Ed25519PublicKey, sent: Sent) -> dict[str, Any]:
    """The quarantine notice's fields (and ``raw_b64``) when it is signed by the pinned receipt key
    and names exactly the upload sent (device, seq, whole-file SHA-256); otherwise
    :class:`ReceiptError` saying why. An unsigned 422 is only a claim."""
    if not header:
        raise ReceiptError("the refusal carries no signed quarantine notice")
    fields = expect_quarantine_notice(decode_receipt_header(header, "Bodycam-Quarantine"), receipt_key,
                                      sent.device_id, sent.seq, sent.file_sha256)
    return {**fields, "raw_b64": header.strip()}
