"""Headquarters' side of c2sp.org/tlog-witness: on each periodic pass, the newest checkpoint is
sent to every configured witness with a consistency proof from the size that witness last
cosigned, and each cosignature that verifies is kept with the checkpoint (``tlog_cosignatures``).

``serve --witness URL=VKEY`` names a witness (its ``add-checkpoint`` prefix and its cosigner
verifier key); ``--units-need-cosigned`` makes heartbeats show units the newest cosigned
checkpoint rather than the newest (units that require a witness accept no other).
"""

from __future__ import annotations

import argparse
import logging
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.evidence import note
from agent.textsafe import safe_text
from hq.tlog import TlogStoreError, TransparencyLog
from hq.witness import SIZE_TYPE, request_body

log = logging.getLogger(__name__)

TIMEOUT_S = 10.0
MAX_ANSWER_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class WitnessAt:
    url: str  # the submission prefix; requests go to URL/add-checkpoint
    verifier: note.Verifier


@dataclass
class WitnessPolicy:
    witnesses: list[WitnessAt] = field(default_factory=list)
    units_need_cosigned: bool = False


def parse_witness(value: str) -> WitnessAt:
    """``URL=VKEY`` -> a witness (the vkey of a type 0x04 cosigner)."""
    url, sep, vkey = value.partition("=")
    if not sep or not url.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"{value!r}: expected URL=VKEY (http(s)://HOST:PORT=NAME+ID+KEY)")
    try:
        verifier = note.parse_vkey(vkey)
    except note.NoteError as exc:
        raise argparse.ArgumentTypeError(f"{value!r}: {exc}") from exc
    if verifier.sig_type != note.SIG_COSIGNATURE:
        raise argparse.ArgumentTypeError(f"{value!r}: not a cosigner key (type 0x04)")
    return WitnessAt(url.rstrip("/"), verifier)


Post = Callable[[str, bytes], tuple[int, bytes, str]]  # url, body -> status, body, content type


def http_post(url: str, body: bytes) -> tuple[int, bytes, str]:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "text/plain"})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:  # noqa: S310 - a configured witness URL
            return resp.status, resp.read(MAX_ANSWER_BYTES), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(MAX_ANSWER_BYTES), exc.headers.get("Content-Type", "")


class Cosigning:
    """Asks each witness to cosign the newest checkpoint. Not thread-safe: the periodic pass
    calls ``run`` from one thread. Sizes witnesses cosigned are remembered in memory only; a
    restarted node learns them from the witness's ``409``."""

    def __init__(self, tlog: TransparencyLog, policy: WitnessPolicy, now_ns: Callable[[], int],
                 post: Post = http_post) -> None:
        self._tlog = tlog
        self._policy = policy
        self._now_ns = now_ns
        self._post = post
        self._cosigned: dict[str, int] = {}

    def run(self) -> dict[str, str]:
        """One round; each witness's outcome (``cosigned N``, or why not), for the log."""
        signed = self._tlog.checkpoint()
        if signed is None or not self._policy.witnesses:
            return {}
        own = note.split(signed)[0] + "\n" + "".join(
            sl.line() for sl in note.split(signed)[1] if sl.name == self._tlog.origin)
        size = note.parse_checkpoint(note.split(signed)[0]).size
        outcome = {}
        for w in self._policy.witnesses:
            try:
                outcome[w.verifier.name] = self._one(w, own, size)
            except (OSError, TlogStoreError, note.NoteError, ValueError) as exc:
                outcome[w.verifier.name] = f"failed: {exc}"
                log.warning("witness %s: %s", w.url, exc)
        return outcome

    def _one(self, w: WitnessAt, own: str, size: int) -> str:
        url = f"{w.url}/add-checkpoint"
        for _ in range(2):  # a 409 tells the size the witness holds; one retry from there
            old = self._cosigned.get(w.url, 0)
            if old > size:
                return f"failed: the witness cosigned size {old}, the log is at {size}"
            proof = self._tlog.consistency(old, size) if 0 < old < size else []
            status, body, ctype = self._post(url, request_body(old, proof, own))
            if status == 409 and ctype.startswith(SIZE_TYPE):
                self._cosigned[w.url] = int(body.decode("ascii").strip())
                continue
            if status != 200:
                return f"refused {status}: {safe_text(body[:200].decode('utf-8', 'replace').strip())}"
            merged = note.add_signatures(own, body.decode("utf-8"))
            note.open_note(merged, [w.verifier])  # NoteError unless the witness's cosignature verifies
            line = next(sl.line() for sl in note.split(merged)[1]
                        if sl.name == w.verifier.name and sl.key_id == w.verifier.key_id)
            self._tlog.add_cosignatures(size, {w.verifier.name: line}, self._now_ns())
            self._cosigned[w.url] = size
            return f"cosigned {size}"
        return "failed: the witness's size keeps changing"


def news(before: dict[str, str], now: dict[str, str]) -> dict[str, str]:
    """The witnesses whose outcome is worth an audit record: a refusal or failure that is new
    (first seen, or different from the last pass's), and a cosignature after one. A witness that
    keeps refusing is recorded once, not on every pass; one that keeps cosigning never."""
    def troubled(outcome: str | None) -> bool:
        return outcome is not None and not outcome.startswith("cosigned")

    return {name: outcome for name, outcome in now.items()
            if (troubled(outcome) and outcome != before.get(name)) or
            (not troubled(outcome) and troubled(before.get(name)))}


def add_serve_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-origin", type=_origin, help="the transparency log's name (its checkpoints' origin "
                   "line; default bodycam-hq/ and the receipt key's fingerprint): never change it once units saw it")
    p.add_argument("--witness", type=parse_witness, action="append", default=[], metavar="URL=VKEY",
                   help="a witness to ask for cosignatures on each periodic pass (repeatable); VKEY from "
                   "bodycam-hq witness vkey")
    p.add_argument("--units-need-cosigned", action="store_true",
                   help="heartbeats show units the newest checkpoint a witness cosigned (for units that require one)")


def _origin(value: str) -> str:
    try:
        return note.check_name(value)
    except note.NoteError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def policy(args: argparse.Namespace) -> WitnessPolicy:
    return WitnessPolicy(list(args.witness), bool(args.units_need_cosigned))
