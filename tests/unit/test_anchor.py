"""Anchors: what a signed heartbeat or receipt vouches for, checked against a set of entries."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.evidence.anchor import Anchor, AnchorError, check_anchors, read_anchor, runs
from agent.evidence.receipt import make_heartbeat, make_receipt

H = {seq: f"{seq:064x}" for seq in range(10)}


class _Keys:
    """A KeyStore over one Ed25519 key."""

    def __init__(self) -> None:
        self.key = ed25519.Ed25519PrivateKey.generate()

    def sign(self, data: bytes) -> bytes:
        return self.key.sign(data)

    def public_key(self) -> ed25519.Ed25519PublicKey:
        return self.key.public_key()


def test_runs_names_missing_seqs_compactly() -> None:
    assert runs([9, 3, 4, 5, 7]) == "3-5, 7, 9"
    assert runs([]) == ""


def test_an_anchor_finds_the_cut_tail_and_a_different_entry() -> None:
    anchor = Anchor("hb", "heartbeat", "u1", 9, {9: H[9]}, None)
    present = {s: H[s] for s in range(2, 7)}
    (finding,) = check_anchors([anchor], present, "u1")
    assert finding.seq == 7 and "seq 7-9 (3 entries)" in finding.reason
    assert check_anchors([anchor], {**present, 7: H[7], 8: H[8], 9: H[9]}, "u1") == []
    other = {**present, 7: H[7], 8: H[8], 9: "f" * 64}
    (changed,) = check_anchors([anchor], other, "u1")
    assert changed.seq == 9 and "not the entry" in changed.reason
    (foreign,) = check_anchors([anchor], present, "u2")
    assert "of unit 'u1'" in foreign.reason


def test_anchor_files_are_read_with_their_signatures_checked(tmp_path: Path) -> None:
    device, hq = _Keys(), ed25519.Ed25519PrivateKey.generate()
    hb = tmp_path / "hb.json"
    hb.write_bytes(make_heartbeat({"device_id": "u1", "utc_ns": 5, "chain_head": {"seq": 4, "hash": H[4]}}, device))
    got = read_anchor(hb, device.public_key(), None)
    assert (got.kind, got.through, dict(got.hashes)) == ("heartbeat", 4, {4: H[4]})
    with pytest.raises(AnchorError, match="does not verify"):
        read_anchor(hb, ed25519.Ed25519PrivateKey.generate().public_key(), None)

    rc = tmp_path / "r.receipt"
    rc.write_bytes(make_receipt({"device_id": "u1", "seq": 3, "manifest_sha256": H[3], "file_sha256": H[0],
                                 "received_utc_ns": 1, "chain_head": {"seq": 6, "hash": H[6]},
                                 "contiguous_through": 6}, hq))
    got = read_anchor(rc, device.public_key(), hq.public_key())
    assert (got.kind, got.through, dict(got.hashes)) == ("receipt", 6, {3: H[3], 6: H[6]})
    with pytest.raises(AnchorError, match="--hq-pub"):
        read_anchor(rc, device.public_key(), None)
    data = rc.read_bytes()
    rc.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(AnchorError, match="neither"):
        read_anchor(rc, device.public_key(), hq.public_key())
