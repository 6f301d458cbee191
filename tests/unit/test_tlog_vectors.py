"""The Merkle proofs and signed notes against published test vectors (tests/unit/data/tlog/README.md)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.evidence import merkle, note

DATA = Path(__file__).parent / "data" / "tlog"
MERKLE = json.loads((DATA / "transparency-dev-merkle.json").read_text())
NOTES = json.loads((DATA / "notes.json").read_text())

# The eight leaves of RFC 6962's reference tree (certificate-transparency's test data), over which
# transparency-dev's vectors are computed: the roots and proofs below come from the vectors.
LEAVES = [bytes.fromhex(h) for h in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                                     "606162636465666768696a6b6c6d6e6f")]


def _b(value: str | None) -> bytes:
    return b"" if value is None else base64.b64decode(value)


def _proof(vector: dict[str, Any]) -> list[bytes]:
    return [_b(p) for p in vector.get("proof") or []]


@pytest.mark.parametrize("vector", MERKLE["inclusion"], ids=lambda v: v["file"])
def test_inclusion_vectors(vector: dict[str, Any]) -> None:
    def check() -> None:
        merkle.verify_inclusion(vector["leafIdx"], vector["treeSize"], _b(vector["leafHash"]), _proof(vector),
                                _b(vector["root"]))

    if vector["wantErr"]:
        with pytest.raises(merkle.MerkleError):
            check()
    else:
        check()


@pytest.mark.parametrize("vector", MERKLE["consistency"], ids=lambda v: v["file"])
def test_consistency_vectors(vector: dict[str, Any]) -> None:
    def check() -> None:
        merkle.verify_consistency(vector["size1"], vector["size2"], _b(vector["root1"]), _b(vector["root2"]),
                                  _proof(vector))

    if vector["wantErr"]:
        with pytest.raises(merkle.MerkleError):
            check()
    else:
        check()


def _happy(kind: str) -> list[dict[str, Any]]:
    return [v for v in MERKLE[kind] if v["desc"] == "happy path"]


@pytest.mark.parametrize("vector", _happy("inclusion"), ids=lambda v: v["file"])
def test_made_inclusion_proofs_equal_the_published_ones(vector: dict[str, Any]) -> None:
    tree = merkle.MemoryTree(LEAVES[: vector["treeSize"]])
    assert tree.root() == _b(vector["root"])
    assert tree.node(0, vector["leafIdx"]) == _b(vector["leafHash"])
    assert merkle.inclusion_proof(tree.node, vector["leafIdx"], vector["treeSize"]) == _proof(vector)


@pytest.mark.parametrize("vector", _happy("consistency"), ids=lambda v: v["file"])
def test_made_consistency_proofs_equal_the_published_ones(vector: dict[str, Any]) -> None:
    tree = merkle.MemoryTree(LEAVES[: vector["size2"]])
    assert tree.root(vector["size1"]) == _b(vector["root1"])
    assert tree.root(vector["size2"]) == _b(vector["root2"])
    assert merkle.consistency_proof(tree.node, vector["size1"], vector["size2"]) == _proof(vector)


def test_the_empty_tree_hashes_to_the_hash_of_nothing() -> None:
    assert merkle.MemoryTree().root() == bytes.fromhex(
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")


@pytest.mark.parametrize("vector", NOTES["notes"], ids=lambda v: v["vkey"].split("+")[0])
def test_published_notes_verify_and_tampered_ones_do_not(vector: dict[str, Any]) -> None:
    verifier = note.parse_vkey(vector["vkey"])
    assert verifier.vkey() == vector["vkey"]  # key id and encoding computed as published
    opened = note.open_note(vector["note"], [verifier])
    assert opened.text == vector["text"]
    assert list(opened.verified) == [verifier.name]
    with pytest.raises(note.NoteError, match="does not verify"):
        note.open_note(vector["note"].replace("a", "A", 1), [verifier])


def test_signing_reproduces_the_go_note_byte_for_byte() -> None:
    vector = NOTES["notes"][0]
    _, _, name, hex_id, material = vector["skey"].split("+", 4)
    raw = base64.b64decode(material)
    assert raw[0] == note.SIG_ED25519
    signer = note.Signer(name, ed25519.Ed25519PrivateKey.from_private_bytes(raw[1:]))
    assert f"{signer.verifier.key_id:08x}" == hex_id
    assert note.sign(vector["text"], signer) == vector["note"]  # Ed25519 is deterministic


def test_the_published_cosignature_parses_with_its_timestamp() -> None:
    vector = NOTES["cosigned_checkpoint"]
    text, lines = note.split(vector["note"])
    cp = note.parse_checkpoint(text)
    assert (cp.origin, cp.size) == (vector["origin"], vector["size"])
    witness = next(sl for sl in lines if sl.name == vector["witness"])
    assert int.from_bytes(witness.signature[:8], "big") == vector["timestamp"]
    assert len(witness.signature) == 8 + 64


def test_unknown_keys_are_ignored_but_a_note_needs_one_known() -> None:
    vector = NOTES["notes"][0]
    other = note.Signer("other.example/k", ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(note.NoteError, match="no signature by a trusted key"):
        note.open_note(vector["note"], [other.verifier])
    both = note.open_note(note.add_signatures(vector["note"], other.signature_line(vector["text"].encode())),
                          [note.parse_vkey(vector["vkey"])])
    assert list(both.verified) == ["PeterNeumann"]
    assert len(both.lines) == 2


def test_a_verifier_key_whose_base64_holds_a_plus_parses() -> None:
    for _ in range(64):  # about 1 key in 3 has a "+" in its base64: this meets several
        v = note.Signer("hq.example/log", ed25519.Ed25519PrivateKey.generate()).verifier
        assert note.parse_vkey(v.vkey()) == v
