"""``bodycam verify``'s offline check of an export's transparency-log proofs (``tlog/``): each
receipt's inclusion proof against the log's signed checkpoint, optionally cosigned by trusted
witnesses (docs/transparency-log.md, "Checking an export")."""

from __future__ import annotations

import argparse
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.evidence import canonical, note
from agent.evidence.chain import Finding
from agent.evidence.tlogproof import CHAIN_HEAD_PREFIX, TlogError, check_inclusion, leaf_kind, receipt_leaf

MAX_PROOF_BYTES = 256 * 1024


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-key", metavar="VKEY", help="the transparency log's verifier key (bodycam-hq tlog vkey): "
                   "pins its name; default: the receipt key of hq.pub under the checkpoint's name")
    p.add_argument("--witness", action="append", default=[], metavar="VKEY",
                   help="a witness whose cosignature counts (bodycam-hq witness vkey); repeatable")
    p.add_argument("--witness-quorum", type=int, default=0, metavar="N",
                   help="cosignatures of --witness keys the log's checkpoint needs (default 0)")


@dataclass
class LogResult:
    proven: int = 0  # receipts
    heartbeats: int = 0  # heartbeat anchors whose chain-head leaf is proven
    origin: str | None = None
    size: int | None = None
    cosigned_by: list[str] = field(default_factory=list)
    problems: list[Finding] = field(default_factory=list)
    unchecked: str | None = None


def parse_keys(args: argparse.Namespace) -> tuple[note.Verifier | None, list[note.Verifier]]:
    """The --log-key and --witness keys; ValueError naming a bad one."""
    given, quorum = getattr(args, "log_key", None), getattr(args, "witness_quorum", 0)
    try:
        log_key = note.parse_vkey(given) if given else None
        witnesses = [note.parse_vkey(v) for v in getattr(args, "witness", [])]
    except note.NoteError as exc:
        raise ValueError(f"a verifier key: {exc}") from exc
    if quorum > len(witnesses):
        raise ValueError(f"--witness-quorum {quorum} is more than the {len(witnesses)} --witness keys")
    return log_key, witnesses


def check_export_log(folder: Path, receipt_pub: ed25519.Ed25519PublicKey | None, log_key: note.Verifier | None,
                     witnesses: list[note.Verifier], quorum: int) -> LogResult | None:
    """Check ``folder/tlog/*.proof`` against ``folder/receipts/*.receipt``; None when the export
    carries no log proofs."""
    proofs = sorted((folder / "tlog").glob("*.proof")) if (folder / "tlog").is_dir() else []
    if not proofs:
        return None
    result = LogResult()
    key = log_key.public if log_key is not None else receipt_pub
    if key is None:  # not a finding about the evidence: the reader lacks a key
        result.unchecked = "not checked: no log key (give --log-key, or --hq-pub with headquarters' hq.pub)"
        return result
    for path in proofs:
        try:
            data = path.read_bytes()[:MAX_PROOF_BYTES]
            if not path.stem.isdigit():
                leaf = _heartbeat_leaf(folder, path.stem)
            else:
                leaf = receipt_leaf((folder / "receipts" / f"{path.stem}.receipt").read_bytes())
            included = check_inclusion(data, leaf, key, None if log_key is None else log_key.name, witnesses, quorum)
        except OSError as exc:
            result.problems.append(Finding(path.name, _seq(path), f"cannot read it or its receipt: {exc.strerror}"))
            continue
        except TlogError as exc:
            what = "the receipt" if path.stem.isdigit() else "the heartbeat anchor"
            result.problems.append(Finding(path.name, _seq(path), f"{what} is not proven in the log: {exc}"))
            continue
        cp = included.checkpoint
        result.proven += path.stem.isdigit()
        result.heartbeats += not path.stem.isdigit()
        result.origin, result.size = cp.checkpoint.origin, cp.checkpoint.size
        result.cosigned_by = sorted(w.name for w in witnesses if w.name in cp.verified)
    return result


def _heartbeat_leaf(folder: Path, stem: str) -> bytes:
    """The chain-head leaf of the heartbeat anchor ``anchors/<stem>.json``: it must name that
    heartbeat (its SHA-256) and its chain head, else TlogError."""
    leaf = (folder / "tlog" / f"{stem}.leaf").read_bytes()[:MAX_PROOF_BYTES]
    body = (folder / "anchors" / f"{stem}.json").read_bytes()[:MAX_PROOF_BYTES]
    if leaf_kind(leaf) != "chain-head":
        raise TlogError(f"{stem}.leaf is not a chain-head leaf")
    try:
        doc = canonical.loads(leaf[len(CHAIN_HEAD_PREFIX):])
        status = canonical.loads(body)["status"]
    except (canonical.CanonicalError, KeyError, TypeError) as exc:
        raise TlogError(f"{stem}: the leaf or the heartbeat is not canonical JSON") from exc
    if not isinstance(doc, dict) or not isinstance(status, dict):
        raise TlogError(f"{stem}: the leaf or the heartbeat is not a JSON object")
    if doc.get("heartbeat_sha256") != hashlib.sha256(body).hexdigest() or doc.get("chain_head") != status.get(
            "chain_head") or doc.get("device_id") != status.get("device_id"):
        raise TlogError(f"{stem}.leaf does not name the heartbeat anchors/{stem}.json")
    return leaf


def _seq(path: Path) -> int | None:
    return int(path.stem) if path.stem.isdigit() else None


def describe(r: LogResult) -> str:
    """The ``Log:`` line of the text report."""
    if r.unchecked is not None:
        return f"the export's log proofs were {r.unchecked}"
    cosigned = f", cosigned by {', '.join(r.cosigned_by)}" if r.cosigned_by else ""
    beats = f" and {r.heartbeats} heartbeat anchor(s)" if r.heartbeats else ""
    return f"{r.proven} receipt(s){beats} proven in log {r.origin} at size {r.size}{cosigned}"
