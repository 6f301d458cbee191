"""RFC 6962 / RFC 9162 Merkle tree hashing, inclusion and consistency proofs: making and checking.

Pure functions; the tree's storage is whoever answers ``NodeSource`` (headquarters' log, an
in-memory list in tests). A *node* is the hash of a perfect subtree: ``node(level, index)``
covers leaves ``index * 2**level`` up to ``(index + 1) * 2**level``; level 0 holds leaf hashes.
Proofs are lists of 32-byte hashes, in the order of RFC 9162 sections 2.1.3 and 2.1.4, so
any RFC 6962 tooling (transparency-dev/merkle, Trillian, CT clients) reads them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

HASH_LEN = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
MAX_TREE_SIZE = 2**63 - 1

NodeSource = Callable[[int, int], bytes]  # (level, index) -> the hash of that perfect subtree


class MerkleError(ValueError):
    """A proof that does not verify, or arguments that name no proof; the message says which."""


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962 2.1: SHA-256(0x00 || leaf)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 2.1: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def subtree_hash(node: NodeSource, start: int, end: int) -> bytes:
    """MTH(D[start:end]) for a range whose left part is always a perfect subtree, as in every
    range the RFC's recursion names (``start`` a multiple of the range's largest power of two)."""
    n = end - start
    if n <= 0:
        raise MerkleError(f"empty range {start}..{end}")
    if n & (n - 1) == 0 and start % n == 0:
        return node(n.bit_length() - 1, start // n)
    k = _split(n)
    return node_hash(subtree_hash(node, start, start + k), subtree_hash(node, start + k, end))


def root(node: NodeSource, size: int) -> bytes:
    """The tree head of the first ``size`` leaves (``EMPTY_ROOT`` for 0)."""
    return EMPTY_ROOT if size == 0 else subtree_hash(node, 0, size)


def inclusion_proof(node: NodeSource, index: int, size: int) -> list[bytes]:
    """RFC 9162 2.1.3.1 PATH(index, D[0:size])."""
    if not 0 <= index < size:
        raise MerkleError(f"leaf {index} is not in a tree of size {size}")
    proof: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            proof.append(subtree_hash(node, start + k, end))
            end = start + k
        else:
            proof.append(subtree_hash(node, start, start + k))
            start += k
    proof.reverse()
    return proof


def consistency_proof(node: NodeSource, size1: int, size2: int) -> list[bytes]:
    """RFC 9162 2.1.4.1 PROOF(size1, D[0:size2]); empty when ``size1`` is 0 or equals ``size2``."""
    if not 0 <= size1 <= size2:
        raise MerkleError(f"no consistency proof from size {size1} to size {size2}")
    if size1 == 0 or size1 == size2:
        return []
    return _subproof(node, size1, 0, size2, True)


def _subproof(node: NodeSource, m: int, start: int, end: int, whole: bool) -> list[bytes]:
    n = end - start
    if m == n:
        return [] if whole else [subtree_hash(node, start, end)]
    k = _split(n)
    if m <= k:
        return _subproof(node, m, start, start + k, whole) + [subtree_hash(node, start + k, end)]
    return _subproof(node, m - k, start + k, end, False) + [subtree_hash(node, start, start + k)]


def _check_hash(h: bytes, what: str) -> None:
    if not isinstance(h, bytes | bytearray) or len(h) != HASH_LEN:
        raise MerkleError(f"{what} is not a 32-byte hash")


def _up_the_right_edge(fn: int, sn: int) -> tuple[int, int]:
    """RFC 9162's "right-shift both equally until LSB(fn) is set or fn is 0" (a no-op when set)."""
    while fn and not fn & 1:
        fn >>= 1
        sn >>= 1
    return fn, sn


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root that ``proof`` places ``leaf`` (a leaf hash) under at ``index`` (RFC 9162 2.1.3.2)."""
    if not 0 <= index < size <= MAX_TREE_SIZE:
        raise MerkleError(f"leaf {index} is not in a tree of size {size}")
    _check_hash(leaf, "the leaf hash")
    fn, sn = index, size - 1
    r = bytes(leaf)
    for p in proof:
        _check_hash(p, "a proof hash")
        if sn == 0:
            raise MerkleError("the inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            fn, sn = _up_the_right_edge(fn, sn)
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise MerkleError("the inclusion proof is shorter than the tree is deep")
    return r


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], expected_root: bytes) -> None:
    """Raise MerkleError unless ``proof`` shows leaf hash ``leaf`` at ``index`` of the tree of
    ``size`` whose head is ``expected_root``."""
    _check_hash(expected_root, "the root")
    if root_from_inclusion(index, size, leaf, proof) != expected_root:
        raise MerkleError(f"leaf {index} is not in the tree of size {size} with that root")


def verify_consistency(size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]) -> None:
    """Raise MerkleError unless the tree of ``size2`` and head ``root2`` extends the tree of
    ``size1`` (at least 1) and head ``root1`` by appending only (RFC 9162 2.1.4.2)."""
    if size1 == 0:
        # RFC 9162 defines the proof for 0 < size1 only; the empty tree precedes every tree, so a
        # caller with nothing earlier has nothing to check (as the published vectors expect).
        raise MerkleError("no consistency proof from the empty tree: there is nothing to check")
    if not 0 < size1 <= size2 <= MAX_TREE_SIZE:
        raise MerkleError(f"size {size1} cannot precede size {size2}")
    if size1 == size2:
        if proof:
            raise MerkleError("a proof between equal sizes must be empty")
        if root1 != root2:
            raise MerkleError(f"two different roots for the same size {size1}: a fork")
        return
    _check_hash(root1, "the first root")
    _check_hash(root2, "the second root")
    if not proof:
        raise MerkleError("the consistency proof is empty")
    for p in proof:
        _check_hash(p, "a proof hash")
    nodes = list(proof)
    if size1 & (size1 - 1) == 0:  # size1 a power of two: its root is the first node
        nodes.insert(0, bytes(root1))
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = nodes[0]
    for c in nodes[1:]:
        if sn == 0:
            raise MerkleError("the consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            fn, sn = _up_the_right_edge(fn, sn)
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise MerkleError("the consistency proof is too short")
    if fr != root1:
        raise MerkleError(f"the proof does not lead to the root of size {size1}: history was rewritten")
    if sr != root2:
        raise MerkleError(f"the proof does not lead to the root of size {size2}")


class MemoryTree:
    """A whole tree in memory: tests, the bench and the verifier's offline checks. Appends keep
    every perfect subtree's hash, so roots and proofs cost O(log n) lookups."""

    def __init__(self, leaves: Sequence[bytes] = ()) -> None:
        self._levels: list[list[bytes]] = [[]]
        for data in leaves:
            self.append(data)

    @property
    def size(self) -> int:
        return len(self._levels[0])

    def append(self, data: bytes) -> int:
        """Add a leaf (its data, hashed here); return its index."""
        return self.append_hash(leaf_hash(data))

    def append_hash(self, h: bytes) -> int:
        index = len(self._levels[0])
        self._levels[0].append(h)
        level, i = 0, index
        while i & 1:
            h = node_hash(self._levels[level][i - 1], h)
            level, i = level + 1, i >> 1
            if len(self._levels) == level:
                self._levels.append([])
            self._levels[level].append(h)
        return index

    def node(self, level: int, index: int) -> bytes:
        try:
            return self._levels[level][index]
        except IndexError:
            raise MerkleError(f"no complete node ({level}, {index}) in a tree of size {self.size}") from None

    def root(self, size: int | None = None) -> bytes:
        return root(self.node, self.size if size is None else size)
