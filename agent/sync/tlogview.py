"""The unit's view of headquarters' transparency log (docs/sync-protocol.md, "Transparency log").

The unit keeps the newest checkpoint it verified (``<data-dir>/tlog-checkpoint``, the signed
note) and sends its size with each heartbeat; the answer carries the log's newest checkpoint and a
consistency proof from that size. A checkpoint signed by headquarters' receipt key that does not
extend the kept one is a fork or a rewrite: it is kept as proof in ``<data-dir>/tlog-forks/`` and
the caller raises the standing ``tlog-fork`` alarm (a signed chain event). Each receipt's
inclusion proof is checked against its checkpoint and kept with the receipt.

``[sync] tlog_witnesses`` (verifier keys) and ``tlog_witness_quorum`` make the unit accept only
checkpoints cosigned by that many of those witnesses.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.evidence import note
from agent.evidence.receipt import decode_receipt_header
from agent.evidence.tlogproof import (
    TlogError,
    check_consistency,
    check_inclusion,
    decode_header,
    encode_consistency,
    receipt_leaf,
)
from agent.fsutil import atomic_write_bytes, create_new_bytes

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "tlog-checkpoint"
FORKS_DIR = "tlog-forks"


class ForkError(TlogError):
    """Headquarters' log contradicts a checkpoint the unit verified before."""


@dataclass(frozen=True, slots=True)
class Witnessing:
    witnesses: tuple[note.Verifier, ...] = ()
    quorum: int = 0


def parse_witnesses(vkeys: tuple[str, ...], quorum: int) -> Witnessing:
    """The ``[sync] tlog_witnesses`` keys; TlogError naming a bad one."""
    parsed = []
    for v in vkeys:
        try:
            w = note.parse_vkey(v)
        except note.NoteError as exc:
            raise TlogError(f"sync.tlog_witnesses: {v!r}: {exc}") from exc
        if w.sig_type != note.SIG_COSIGNATURE:
            raise TlogError(f"sync.tlog_witnesses: {v!r} is not a witness (cosignature) key")
        parsed.append(w)
    if quorum > len(parsed):
        raise TlogError(f"sync.tlog_witness_quorum {quorum} is more than the {len(parsed)} witnesses listed")
    return Witnessing(tuple(parsed), quorum)


class LogView:
    """Thread contract: the sync thread only (checks and the kept checkpoint); ``status`` from any."""

    def __init__(self, data_dir: Path, receipt_key: ed25519.Ed25519PublicKey,
                 witnessing: Witnessing | None = None) -> None:
        self._dir = data_dir
        self._key = receipt_key
        self._w = witnessing or Witnessing()
        self.seen: note.Checkpoint | None = self._load()

    def _load(self) -> note.Checkpoint | None:
        path = self._dir / CHECKPOINT_FILE
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            log.error("%s cannot be read (%s): the log's history is checked afresh", path, exc)
            return None
        try:  # kept only after it verified; checked again, as a file on disk can be altered
            return check_consistency(_answer(text), None, self._key).checkpoint
        except TlogError as exc:
            log.error("%s does not verify (%s): the log's history is checked afresh", path, exc)
            return None

    @property
    def seen_size(self) -> int:
        return 0 if self.seen is None else self.seen.size

    def status(self) -> dict[str, Any] | None:
        if self.seen is None:
            return None
        return {"origin": self.seen.origin, "size": self.seen.size, "root": self.seen.root.hex()}

    def heartbeat_answer(self, value: str | None) -> bool:
        """Check the ``tlog`` member of a heartbeat answer (None: headquarters keeps no log) and
        keep its checkpoint; True if the view moved. Raises ForkError on a contradiction and
        TlogError on anything else that fails (a bad signature, too few cosignatures)."""
        if value is None:
            return False
        data = decode_header(value, "the heartbeat answer's tlog")
        try:
            signed = check_consistency(data, self.seen, self._key, list(self._w.witnesses), self._w.quorum)
        except TlogError as exc:
            if str(exc).startswith("fork"):
                self._keep_fork(data)
                raise ForkError(str(exc)) from exc
            raise
        if self.seen is not None and signed.checkpoint.size == self.seen.size:
            return False
        atomic_write_bytes(self._dir / CHECKPOINT_FILE, signed.note.encode("utf-8"))
        self.seen = signed.checkpoint
        return True

    def _keep_fork(self, data: bytes) -> None:
        forks = self._dir / FORKS_DIR
        forks.mkdir(mode=0o700, exist_ok=True)
        path = forks / f"{hashlib.sha256(data).hexdigest()[:16]}.json"
        if not path.exists():
            create_new_bytes(path, data)

    def receipt_proof(self, receipt_b64: str, proof_b64: str | None) -> dict[str, Any] | None:
        """What to keep with an acknowledged receipt: its inclusion proof, checked against the
        checkpoint it names (None when headquarters sent none: an older headquarters). Raises
        TlogError when a proof came and does not hold."""
        if proof_b64 is None:
            return None
        data = decode_header(proof_b64, "Bodycam-Tlog-Inclusion")
        origin = None if self.seen is None else self.seen.origin
        included = check_inclusion(data, receipt_leaf(decode_receipt_header(receipt_b64)), self._key, origin)
        return {"index": included.index, "size": included.checkpoint.checkpoint.size, "proof_b64": proof_b64.strip()}


def _answer(signed: str) -> bytes:
    """A kept checkpoint as a consistency answer from nothing, to check it with the same code."""
    return encode_consistency(0, [], signed)
