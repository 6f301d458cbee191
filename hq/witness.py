"""A transparency-log witness (c2sp.org/tlog-witness, ``add-checkpoint``): it cosigns a log's
checkpoint (c2sp.org/tlog-cosignature, Ed25519 type 0x04) only after checking that it extends,
by appending only, the last checkpoint it cosigned for that log.

Meant to run outside headquarters' control (a court, an oversight body) with its own key;
``bodycam-hq witness`` is its command (hq/witness_cmd.py). The state is one JSON file per witness
(the newest cosigned size and root of each log), replaced atomically under a lock before any
cosignature leaves, so a cosignature is never given for a size the witness could roll back
from. A checkpoint that contradicts what it cosigned (a fork, a rewrite) is refused and kept,
signed by the log, in ``forks/`` as proof of the log's misbehaviour.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.evidence import merkle, note
from agent.fsutil import atomic_write_bytes

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
MAX_PROOF_LINES = 63
SIZE_TYPE = "text/x.tlog.size"


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


def _plain(status: int, message: str) -> Answer:
    return Answer(status, (message + "\n").encode())


class WitnessError(ValueError):
    """A witness that cannot start (its key or state); the message says why."""


class Witness:
    """Cosigns checkpoints of the ``logs`` it trusts (origin -> the log's verifier key).

    Thread contract: ``add_checkpoint`` may be called from any thread; one lock serialises the
    check against the stored size with the stored update (c2sp.org/tlog-witness requires it).
    """

    def __init__(self, signer: note.Signer, logs: list[note.Verifier], state_dir: Path,
                 now_s: Callable[[], int]) -> None:
        if signer.sig_type != note.SIG_COSIGNATURE:
            raise WitnessError("a witness signs cosignatures (type 0x04)")
        self.signer = signer
        self._logs = {v.name: v for v in logs}
        self._dir = state_dir
        self._state_path = state_dir / "witness-state.json"
        self._now_s = now_s
        self._lock = threading.Lock()
        self._state = self._load()

    def _load(self) -> dict[str, dict[str, object]]:
        try:
            raw = json.loads(self._state_path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise WitnessError(f"{self._state_path}: cannot read the witness state ({exc}); restore it, never "
                               "start afresh: a witness that forgets what it cosigned can be rolled back") from exc
        if not isinstance(raw, dict):
            raise WitnessError(f"{self._state_path}: not a witness state")
        return raw

    def latest(self, origin: str) -> tuple[int, bytes]:
        entry = self._state.get(origin)
        if not entry:
            return 0, merkle.EMPTY_ROOT
        return int(str(entry["size"])), base64.b64decode(str(entry["root"]))

    def add_checkpoint(self, body: bytes) -> Answer:
        """Answer one ``POST add-checkpoint`` body (c2sp.org/tlog-witness)."""
        if len(body) > MAX_BODY_BYTES:
            return _plain(400, f"a request body of at most {MAX_BODY_BYTES} bytes")
        try:
            old, proof, checkpoint_note = _parse(body)
            text, _ = note.split(checkpoint_note)
            cp = note.parse_checkpoint(text)
        except (ValueError, UnicodeDecodeError) as exc:
            return _plain(400, f"malformed request: {exc}")
        verifier = self._logs.get(cp.origin)
        if verifier is None:
            return _plain(404, f"unknown log {cp.origin!r}")
        try:
            note.open_checkpoint(checkpoint_note, verifier)
        except note.NoteError as exc:
            return _plain(403, f"not signed by the log's key: {exc}")
        if old > cp.size:
            return _plain(400, f"old size {old} is larger than the checkpoint's {cp.size}")
        with self._lock:
            size, root = self.latest(cp.origin)
            if old != size:
                return Answer(409, f"{size}\n".encode(), SIZE_TYPE)
            problem = _inconsistent(old, root, cp, proof)
            if problem is not None:
                self._keep_fork(cp, checkpoint_note, problem)
                return _plain(422, problem)
            self._state[cp.origin] = {"size": cp.size, "root": base64.b64encode(cp.root).decode("ascii")}
            atomic_write_bytes(self._state_path, json.dumps(self._state, sort_keys=True, indent=1).encode())
        line = self.signer.signature_line(text.encode("utf-8"), self._now_s())
        return Answer(200, line.encode("utf-8"))

    def _keep_fork(self, cp: note.Checkpoint, signed: str, problem: str) -> None:
        """Keep the signed checkpoint that contradicts the witness's record: proof of a fork."""
        log.error("log %s: %s; checkpoint of size %d refused and kept", cp.origin, problem, cp.size)
        forks = self._dir / "forks"
        forks.mkdir(mode=0o700, exist_ok=True)
        name = hashlib.sha256(signed.encode("utf-8")).hexdigest()[:16]
        path = forks / f"{cp.size}-{name}.checkpoint"
        if not path.exists():
            atomic_write_bytes(path, signed.encode("utf-8"))


def _inconsistent(old: int, root: bytes, cp: note.Checkpoint, proof: list[bytes]) -> str | None:
    """Why ``cp`` does not extend the cosigned tree of ``old`` leaves and head ``root``; None if it does."""
    if cp.size == 0:
        return None if cp.root == merkle.EMPTY_ROOT else "a checkpoint of size 0 whose root is not the empty tree's"
    if old == 0:
        return None if not proof else "a proof from size 0 must be empty"
    try:
        merkle.verify_consistency(old, cp.size, root, cp.root, proof)
    except merkle.MerkleError as exc:
        return f"fork: the checkpoint of size {cp.size} is not consistent with the cosigned size {old}: {exc}"
    return None


def _parse(body: bytes) -> tuple[int, list[bytes], str]:
    text = body.decode("utf-8")
    head, sep, checkpoint_note = text.partition("\n\n")
    if not sep:
        raise ValueError("expected the old size and proof lines, an empty line, then the checkpoint")
    lines = head.split("\n")
    first, proof_lines = lines[0], lines[1:]
    if not first.startswith("old ") or not first[4:].isdigit() or (first[4:] != "0" and first[4] == "0"):
        raise ValueError("the first line must be 'old N'")
    if len(proof_lines) > MAX_PROOF_LINES:
        raise ValueError(f"more than {MAX_PROOF_LINES} proof lines")
    proof = []
    for line in proof_lines:
        try:
            h = base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("a proof line is not base64") from exc
        if len(h) != merkle.HASH_LEN:
            raise ValueError("a proof line is not a 32-byte hash")
        proof.append(h)
    return int(first[4:]), proof, checkpoint_note


def request_body(old: int, proof: list[bytes], signed_checkpoint: str) -> bytes:
    """The ``add-checkpoint`` body a log sends."""
    lines = [f"old {old}", *(base64.b64encode(h).decode("ascii") for h in proof)]
    return ("\n".join(lines) + "\n\n" + signed_checkpoint).encode("utf-8")


def state_dir_ready(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
