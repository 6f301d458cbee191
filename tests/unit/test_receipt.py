"""Receipts and heartbeat bodies: round trip, tampering, wrong key, wrong entry, malformed fields."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.evidence import canonical
from agent.evidence.format import SIGNATURE_LEN
from agent.evidence.receipt import (
    ReceiptError,
    decode_receipt_header,
    encode_receipt_header,
    expect_receipt,
    make_heartbeat,
    make_receipt,
    receipt_key_id,
    verify_heartbeat,
    verify_receipt,
)
from tests.evidence_util import MemorySigner

H1 = "a1" * 32
H2 = "b2" * 32


def fields(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "device_id": "unit-7",
        "seq": 41,
        "manifest_sha256": H1,
        "file_sha256": H2,
        "received_utc_ns": 1_790_000_000_000_000_000,
        "chain_head": {"seq": 41, "hash": H1},
        "contiguous_through": 41,
    }
    doc.update(over)
    return doc


@pytest.fixture
def key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def test_round_trip_adds_the_signer_fingerprint(key: ed25519.Ed25519PrivateKey) -> None:
    data = make_receipt(fields(), key)
    doc = verify_receipt(data, key.public_key())
    assert doc == {**fields(), "hq_key": receipt_key_id(key.public_key())}
    assert canonical.loads(data[:-SIGNATURE_LEN]) == doc


def test_header_encoding_round_trips(key: ed25519.Ed25519PrivateKey) -> None:
    data = make_receipt(fields(), key)
    assert decode_receipt_header(encode_receipt_header(data)) == data
    with pytest.raises(ReceiptError):
        decode_receipt_header("not base64!")


def test_any_flipped_byte_is_refused(key: ed25519.Ed25519PrivateKey) -> None:
    data = make_receipt(fields(), key)
    for i in (0, 10, len(data) // 2, len(data) - SIGNATURE_LEN - 1, len(data) - 1):
        bad = bytearray(data)
        bad[i] ^= 0x01
        with pytest.raises(ReceiptError):
            verify_receipt(bytes(bad), key.public_key())


def test_altered_field_with_original_signature_is_refused(key: ed25519.Ed25519PrivateKey) -> None:
    data = make_receipt(fields(), key)
    body = canonical.dumps({**canonical.loads(data[:-SIGNATURE_LEN]), "seq": 42})
    with pytest.raises(ReceiptError, match="signature"):
        verify_receipt(body + data[-SIGNATURE_LEN:], key.public_key())


def test_wrong_key_is_refused(key: ed25519.Ed25519PrivateKey) -> None:
    other = ed25519.Ed25519PrivateKey.generate()
    with pytest.raises(ReceiptError, match="signature"):
        verify_receipt(make_receipt(fields(), other), key.public_key())


def test_hq_key_must_name_the_signer(key: ed25519.Ed25519PrivateKey) -> None:
    with pytest.raises(ReceiptError, match="hq_key"):
        make_receipt(fields(hq_key="00" * 32), key)


def test_expect_receipt_checks_the_entry(key: ed25519.Ed25519PrivateKey) -> None:
    data = make_receipt(fields(), key)
    assert expect_receipt(data, key.public_key(), "unit-7", 41, H1)["seq"] == 41
    for device, seq, mhash in (("unit-8", 41, H1), ("unit-7", 40, H1), ("unit-7", 41, H2)):
        with pytest.raises(ReceiptError):
            expect_receipt(data, key.public_key(), device, seq, mhash)


@pytest.mark.parametrize(
    "bad",
    [
        {"seq": -1},
        {"seq": True},
        {"manifest_sha256": "XYZ"},
        {"chain_head": {"seq": 1}},
        {"contiguous_through": -2},
        {"device_id": ""},
        {"extra": 1},
    ],
)
def test_malformed_fields_are_refused(key: ed25519.Ed25519PrivateKey, bad: dict[str, Any]) -> None:
    with pytest.raises(ReceiptError):
        make_receipt(fields(**bad), key)


def test_missing_field_is_refused(key: ed25519.Ed25519PrivateKey) -> None:
    doc = fields()
    del doc["file_sha256"]
    with pytest.raises(ReceiptError, match="missing"):
        make_receipt(doc, key)


def test_truncated_or_empty_receipt_is_refused(key: ed25519.Ed25519PrivateKey) -> None:
    for data in (b"", b"x" * SIGNATURE_LEN, make_receipt(fields(), key)[:-1]):
        with pytest.raises(ReceiptError):
            verify_receipt(data, key.public_key())


def test_heartbeat_round_trip_and_tampering() -> None:
    signer = MemorySigner()
    status = {"battery_pct": 80, "recording": False, "chain_head": {"seq": 3, "hash": H1}}
    body = make_heartbeat(status, signer)
    assert verify_heartbeat(body, signer.public_key()) == status
    tampered = body.replace(b"80", b"81")
    with pytest.raises(ReceiptError, match="signature"):
        verify_heartbeat(tampered, signer.public_key())
    with pytest.raises(ReceiptError, match="signature"):
        verify_heartbeat(body, MemorySigner().public_key())
    with pytest.raises(ReceiptError):
        verify_heartbeat(b'{"status": {}}', signer.public_key())
