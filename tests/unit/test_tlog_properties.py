"""Property tests of the Merkle log over random histories: every proof verifies, and an altered
leaf, a reordered history or a fork is refused."""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.evidence import merkle, note
from agent.evidence.merkle import MerkleError

histories = st.lists(st.binary(max_size=24), min_size=1, max_size=70)
KEY = ed25519.Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"bodycam tlog property test").digest())
LOG = note.Signer("hq.example/log", KEY)


def _refused(check: object, *args: object) -> bool:
    try:
        check(*args)  # type: ignore[operator]
    except MerkleError:
        return True
    return False


def _reference_root(leaves: list[bytes]) -> bytes:
    """RFC 6962 2.1 MTH written as the RFC states it, recursively, to compare the tree against."""
    if not leaves:
        return merkle.EMPTY_ROOT
    if len(leaves) == 1:
        return merkle.leaf_hash(leaves[0])
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return merkle.node_hash(_reference_root(leaves[:k]), _reference_root(leaves[k:]))


@settings(max_examples=60, deadline=None)
@given(histories, st.data())
def test_every_inclusion_proof_verifies_and_an_altered_leaf_is_refused(
    leaves: list[bytes], data: st.DataObject
) -> None:
    tree = merkle.MemoryTree(leaves)
    size = data.draw(st.integers(1, len(leaves)), label="size")
    index = data.draw(st.integers(0, size - 1), label="index")
    head = tree.root(size)
    assert head == _reference_root(leaves[:size])
    proof = merkle.inclusion_proof(tree.node, index, size)
    merkle.verify_inclusion(index, size, merkle.leaf_hash(leaves[index]), proof, head)
    altered = leaves[index] + b"!"
    assert _refused(merkle.verify_inclusion, index, size, merkle.leaf_hash(altered), proof, head)
    if size > 1:  # the same leaf claimed at another position
        other = (index + 1) % size
        if leaves[other] != leaves[index]:
            assert _refused(merkle.verify_inclusion, other, size, merkle.leaf_hash(leaves[index]), proof, head)


@settings(max_examples=60, deadline=None)
@given(histories, st.data())
def test_every_consistency_proof_verifies(leaves: list[bytes], data: st.DataObject) -> None:
    tree = merkle.MemoryTree(leaves)
    size2 = data.draw(st.integers(1, len(leaves)), label="size2")
    size1 = data.draw(st.integers(1, size2), label="size1")
    proof = merkle.consistency_proof(tree.node, size1, size2)
    merkle.verify_consistency(size1, size2, tree.root(size1), tree.root(size2), proof)
    assert len(proof) <= 2 * size2.bit_length()


@settings(max_examples=60, deadline=None)
@given(histories, st.data())
def test_a_rewritten_or_reordered_history_is_refused(leaves: list[bytes], data: st.DataObject) -> None:
    size2 = data.draw(st.integers(2, max(2, len(leaves) + 3)), label="size2")
    leaves = (leaves * size2)[:size2]
    size1 = data.draw(st.integers(1, size2 - 1), label="size1")
    at = data.draw(st.integers(0, size1 - 1), label="rewritten")
    old = merkle.MemoryTree(leaves[:size1])
    forked = list(leaves)
    if data.draw(st.booleans(), label="reorder") and size1 > 1 and leaves[at] != leaves[(at + 1) % size1]:
        j = (at + 1) % size1
        forked[at], forked[j] = forked[j], forked[at]
    else:
        forked[at] = forked[at] + b"\xff"
    fork = merkle.MemoryTree(forked)
    proof = merkle.consistency_proof(fork.node, size1, size2)
    # The forked log's own proof cannot lead from the old head to its new one.
    assert _refused(merkle.verify_consistency, size1, size2, old.root(), fork.root(), proof)
    # Nor does it help to claim the old head at the same size.
    assert _refused(merkle.verify_consistency, size1, size1, old.root(), fork.root(size1), [])


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**40), st.binary(min_size=32, max_size=32), st.data())
def test_checkpoints_round_trip_and_any_changed_byte_is_refused(size: int, root: bytes, data: st.DataObject) -> None:
    cp = note.Checkpoint(LOG.name, size, root)
    signed = note.sign(cp.text(), LOG)
    assert note.open_checkpoint(signed, LOG.verifier).checkpoint == cp
    text_len = len(cp.text())
    i = data.draw(st.integers(0, text_len - 2), label="byte")
    flipped = signed[:i] + ("1" if signed[i] != "1" else "2") + signed[i + 1:]
    try:
        note.open_checkpoint(flipped, LOG.verifier)
    except note.NoteError:
        return
    raise AssertionError(f"a checkpoint changed at byte {i} still verified")


def test_a_witness_cosignature_is_counted_only_for_a_trusted_witness() -> None:
    witness = note.Signer("court.example/witness", ed25519.Ed25519PrivateKey.generate(), note.SIG_COSIGNATURE)
    stranger = note.Signer("court.example/witness", ed25519.Ed25519PrivateKey.generate(), note.SIG_COSIGNATURE)
    cp = note.Checkpoint(LOG.name, 5, merkle.MemoryTree([b"a"] * 5).root())
    signed = note.sign(cp.text(), LOG)
    cosigned = note.add_signatures(signed, witness.signature_line(cp.text().encode(), 1_790_000_000))
    opened = note.open_checkpoint(cosigned, LOG.verifier, [witness.verifier], witness_quorum=1)
    assert opened.verified == {LOG.name: 0, witness.name: 1_790_000_000}
    try:
        note.open_checkpoint(signed, LOG.verifier, [witness.verifier], witness_quorum=1)
    except note.NoteError as exc:
        assert "1 required" in str(exc)
    else:
        raise AssertionError("a checkpoint without the witness passed a quorum of one")
    by_stranger = note.add_signatures(signed, stranger.signature_line(cp.text().encode(), 1))
    try:  # same name, another key: its id differs, so it is ignored, and the quorum is not met
        note.open_checkpoint(by_stranger, LOG.verifier, [witness.verifier], witness_quorum=1)
    except note.NoteError as exc:
        assert "0 trusted witness" in str(exc)
    else:
        raise AssertionError("a stranger's cosignature counted for the trusted witness")
