"""What headquarters' transparency log holds and the proofs it hands out, as both ends and the
offline verifier read them (docs/transparency-log.md).

Leaves: ``b"bodycam/v1/tlog/receipt\\n" || receipt`` for each receipt headquarters signs, and
``b"bodycam/v1/tlog/chain-head\\n" || canonical JSON`` for each accepted heartbeat's chain head
(the device, the head ``{seq, hash}``, when, and the SHA-256 of the signed heartbeat body: the
body itself, which may hold a position, is never published).

An inclusion proof travels as canonical JSON ``{"index", "size", "proof": [b64...],
"checkpoint": <signed note>}``; a consistency answer as ``{"from_size", "proof": [b64...],
"checkpoint": <signed note>}``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.evidence import canonical, merkle, note

RECEIPT_PREFIX = b"bodycam/v1/tlog/receipt\n"
CHAIN_HEAD_PREFIX = b"bodycam/v1/tlog/chain-head\n"
MAX_LEAF_BYTES = 65_535  # entry bundles prefix each entry with a big-endian uint16 length
MAX_PROOF_HASHES = 64


class TlogError(ValueError):
    """A proof, checkpoint or leaf that does not hold; the message says what."""


def receipt_leaf(receipt: bytes) -> bytes:
    return RECEIPT_PREFIX + receipt


def chain_head_leaf(device_id: str, seq: int, digest: str, heartbeat_body: bytes, received_utc_ns: int) -> bytes:
    doc = {"device_id": device_id, "chain_head": {"seq": seq, "hash": digest},
           "heartbeat_sha256": hashlib.sha256(heartbeat_body).hexdigest(), "received_utc_ns": received_utc_ns}
    return CHAIN_HEAD_PREFIX + canonical.dumps(doc)


def leaf_kind(leaf: bytes) -> str:
    """``receipt``, ``chain-head`` or ``unknown``."""
    if leaf.startswith(RECEIPT_PREFIX):
        return "receipt"
    if leaf.startswith(CHAIN_HEAD_PREFIX):
        return "chain-head"
    return "unknown"


def log_verifier(origin: str, receipt_key: ed25519.Ed25519PublicKey) -> note.Verifier:
    """Headquarters signs its checkpoints with its receipt key, under the log's origin as key name."""
    return note.Verifier(note.check_name(origin), note.SIG_ED25519, receipt_key)


def _b64s(hashes: list[bytes]) -> list[str]:
    return [base64.b64encode(h).decode("ascii") for h in hashes]


def _hashes(value: object) -> list[bytes]:
    if not isinstance(value, list) or len(value) > MAX_PROOF_HASHES:
        raise TlogError(f"a proof is a list of at most {MAX_PROOF_HASHES} base64 hashes")
    out = []
    for v in value:
        try:
            h = base64.b64decode(str(v), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise TlogError("a proof hash is not base64") from exc
        if len(h) != merkle.HASH_LEN:
            raise TlogError("a proof hash is not 32 bytes")
        out.append(h)
    return out


def encode_inclusion(index: int, size: int, proof: list[bytes], checkpoint: str) -> bytes:
    return canonical.dumps({"index": index, "size": size, "proof": _b64s(proof), "checkpoint": checkpoint})


def encode_consistency(from_size: int, proof: list[bytes], checkpoint: str) -> bytes:
    return canonical.dumps({"from_size": from_size, "proof": _b64s(proof), "checkpoint": checkpoint})


def _doc(data: bytes, keys: set[str], what: str) -> dict[str, Any]:
    try:
        doc = canonical.loads(data)
    except canonical.CanonicalError as exc:
        raise TlogError(f"{what}: {exc}") from exc
    if not isinstance(doc, dict) or set(doc) != keys:
        raise TlogError(f"{what}: expected the fields {sorted(keys)}")
    return doc


@dataclass(frozen=True, slots=True)
class Included:
    """A leaf proven in a signed checkpoint."""

    index: int
    checkpoint: note.SignedCheckpoint


def _open(checkpoint: object, log_key: ed25519.Ed25519PublicKey, origin: str | None,
          witnesses: list[note.Verifier] | None, quorum: int) -> note.SignedCheckpoint:
    if not isinstance(checkpoint, str):
        raise TlogError("the checkpoint is not a signed note")
    try:
        claimed = note.parse_checkpoint(note.split(checkpoint)[0]).origin
        if origin is not None and claimed != origin:
            raise TlogError(f"the checkpoint is of log {claimed!r}, not {origin!r}")
        return note.open_checkpoint(checkpoint, log_verifier(claimed, log_key), witnesses, quorum)
    except note.NoteError as exc:
        raise TlogError(f"checkpoint: {exc}") from exc


def check_inclusion(
    data: bytes, leaf: bytes, log_key: ed25519.Ed25519PublicKey, origin: str | None = None,
    witnesses: list[note.Verifier] | None = None, quorum: int = 0,
) -> Included:
    """The proof ``data`` shows ``leaf`` in a checkpoint signed by ``log_key`` (under ``origin``
    when given) and cosigned by ``quorum`` of ``witnesses``; TlogError otherwise."""
    doc = _doc(data, {"index", "size", "proof", "checkpoint"}, "inclusion proof")
    signed = _open(doc["checkpoint"], log_key, origin, witnesses, quorum)
    index, size = doc["index"], doc["size"]
    if not isinstance(index, int) or not isinstance(size, int) or size != signed.checkpoint.size:
        raise TlogError("the inclusion proof's size is not its checkpoint's")
    try:
        merkle.verify_inclusion(index, size, merkle.leaf_hash(leaf), _hashes(doc["proof"]), signed.checkpoint.root)
    except merkle.MerkleError as exc:
        raise TlogError(f"inclusion: {exc}") from exc
    return Included(index, signed)


def check_consistency(
    data: bytes, seen: note.Checkpoint | None, log_key: ed25519.Ed25519PublicKey,
    witnesses: list[note.Verifier] | None = None, quorum: int = 0,
) -> note.SignedCheckpoint:
    """The newer checkpoint of a consistency answer, when it is signed and extends ``seen`` (the
    checkpoint kept from before; None the first time) by appending only. TlogError otherwise:
    a message starting "fork" when the log contradicts what was seen (a rewrite)."""
    doc = _doc(data, {"from_size", "proof", "checkpoint"}, "consistency answer")
    # The log's own signature decides whether a contradiction is a fork (its key signed both
    # views); the witnesses' quorum only whether the newer checkpoint is accepted.
    signed = _open(doc["checkpoint"], log_key, None if seen is None else seen.origin, witnesses, 0)
    new = signed.checkpoint
    if seen is not None and seen.size > 0:
        if new.size < seen.size:
            raise TlogError(f"fork: the log's checkpoint of size {new.size} is smaller than the {seen.size} "
                            "seen before")
        if doc["from_size"] != seen.size:
            raise TlogError(f"the consistency proof starts at size {doc['from_size']}, the unit saw {seen.size}")
        try:
            merkle.verify_consistency(seen.size, new.size, seen.root, new.root, _hashes(doc["proof"]))
        except merkle.MerkleError as exc:
            raise TlogError(f"fork: the checkpoint of size {new.size} does not extend the one of size "
                            f"{seen.size} seen before ({exc})") from exc
    cosigners = [w.name for w in witnesses or [] if w.name in signed.verified]
    if len(cosigners) < quorum:
        raise TlogError(f"the checkpoint carries {len(cosigners)} trusted witness cosignature(s), {quorum} required")
    return signed


def decode_header(value: str, name: str) -> bytes:
    try:
        return base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise TlogError(f"{name} is not base64") from exc


def encode_header(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")

