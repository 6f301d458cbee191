"""Anchors: signed statements of how far a unit's chain reached, so that entries cut off the end
of a set of evidence are found.

An anchor is a device-signed heartbeat body (its status's ``chain_head``: the unit says it had
sealed up to that entry) or a headquarters receipt (its own entry, and the ``chain_head`` that
headquarters held when it signed). Every entry an anchor vouches for, from the first entry of the
set up to the anchor's highest seq, must be present, and each entry the anchor names by hash must
have that manifest hash (docs/evidence-format.md, "Anchors").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.evidence import canonical
from agent.evidence.receipt import ReceiptError, verify_heartbeat, verify_receipt

MAX_ANCHOR_BYTES = 64 * 1024


class AnchorError(ValueError):
    """An anchor file that cannot be read or whose signature does not verify."""


@dataclass(frozen=True, slots=True)
class Anchor:
    """What one anchor vouches for: ``hashes`` maps each seq it names to that entry's manifest
    SHA-256, and every seq up to ``through`` must be present."""

    name: str
    kind: str  # "heartbeat" (signed by the device) or "receipt" (signed by headquarters)
    device_id: str
    through: int
    hashes: Mapping[int, str]
    utc_ns: int | None


def _head(doc: Mapping[str, Any], what: str) -> tuple[int, str]:
    head = doc.get("chain_head")
    if not isinstance(head, Mapping) or not isinstance(head.get("seq"), int) or not isinstance(head.get("hash"), str):
        raise AnchorError(f"{what} has no chain head {{seq, hash}}")
    return int(head["seq"]), str(head["hash"])


def is_heartbeat(data: bytes) -> bool:
    try:
        doc = canonical.loads(data)
    except canonical.CanonicalError:
        return False
    return isinstance(doc, dict) and set(doc) == {"sig", "status"}


def read_anchor(
    path: Path, device_pub: ed25519.Ed25519PublicKey, receipt_pub: ed25519.Ed25519PublicKey | None
) -> Anchor:
    """The anchor in ``path``, its signature checked (a receipt needs headquarters' receipt key)."""
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_ANCHOR_BYTES + 1)
    except OSError as exc:
        raise AnchorError(f"{path}: cannot read it ({exc.strerror})") from exc
    if len(data) > MAX_ANCHOR_BYTES:
        raise AnchorError(f"{path.name}: larger than any anchor ({MAX_ANCHOR_BYTES} bytes)")
    if is_heartbeat(data):
        try:
            status = verify_heartbeat(data, device_pub)
        except ReceiptError as exc:
            raise AnchorError(f"{path.name}: {exc}") from exc
        seq, digest = _head(status, f"{path.name} (heartbeat)")
        device = status.get("device_id")
        when = status.get("utc_ns")
        return Anchor(path.name, "heartbeat", str(device) if device else "", seq, {seq: digest},
                      when if isinstance(when, int) else None)
    if receipt_pub is None:
        raise AnchorError(f"{path.name}: a receipt anchor needs headquarters' receipt key (--hq-pub)")
    try:
        doc = verify_receipt(data, receipt_pub)
    except ReceiptError as exc:
        raise AnchorError(f"{path.name}: neither a signed heartbeat nor a valid receipt: {exc}") from exc
    head_seq, head_hash = _head(doc, f"{path.name} (receipt)")
    hashes = {int(doc["seq"]): str(doc["manifest_sha256"]), head_seq: head_hash}
    return Anchor(path.name, "receipt", str(doc["device_id"]), max(hashes), hashes, int(doc["received_utc_ns"]))


@dataclass(frozen=True, slots=True)
class AnchorFinding:
    anchor: str
    seq: int | None
    reason: str


def runs(seqs: list[int]) -> str:
    """``[3, 4, 5, 9]`` as ``3-5, 9``."""
    parts: list[str] = []
    start = prev = None
    for s in sorted(seqs):
        if start is None or prev is None or s != prev + 1:
            if start is not None and prev is not None:
                parts.append(str(start) if start == prev else f"{start}-{prev}")
            start = s
        prev = s
    if start is not None and prev is not None:
        parts.append(str(start) if start == prev else f"{start}-{prev}")
    return ", ".join(parts)


def check_anchors(anchors: list[Anchor], present: Mapping[int, str], device_id: str | None) -> list[AnchorFinding]:
    """What the anchors find wrong with a set whose entries are ``present`` (seq -> manifest
    SHA-256) of ``device_id``: entries missing up to an anchor's seq, entries whose hash differs,
    anchors of another unit. Empty when every anchor holds."""
    findings: list[AnchorFinding] = []
    first = min(present) if present else 0
    for a in anchors:
        if device_id is not None and a.device_id and a.device_id != device_id:
            findings.append(AnchorFinding(a.name, None, f"the {a.kind} is of unit {a.device_id!r}, "
                                          f"the evidence of {device_id!r}"))
            continue
        missing = [s for s in range(first, a.through + 1) if s not in present]
        if missing:
            findings.append(AnchorFinding(
                a.name, missing[0],
                f"the {a.kind} vouches for every entry up to seq {a.through}; missing from the set: "
                f"seq {runs(missing)} ({len(missing)} entr{'y' if len(missing) == 1 else 'ies'})"))
        for seq, digest in sorted(a.hashes.items()):
            held = present.get(seq)
            if held is not None and held != digest:
                findings.append(AnchorFinding(a.name, seq, f"seq {seq} is not the entry the {a.kind} names "
                                              f"(manifest SHA-256 {held[:16]}..., the anchor {digest[:16]}...)"))
    return findings
