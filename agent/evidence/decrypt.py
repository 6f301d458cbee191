"""Opening a segment with headquarters' private key: content key, chunks, sealed metadata."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from agent.evidence import canonical
from agent.evidence.format import b64decode_strict
from agent.evidence.keys import HqPrivateKey, fingerprint, public_der
from agent.evidence.manifest import SignedManifest
from agent.evidence.sealing import SealError, open_sealed
from agent.evidence.segment import Scan, key_info, scan, sealed_info
from agent.evidence.stream import StreamDecryptor, StreamError


class DecryptError(Exception):
    """A segment that cannot be opened with the given key, with the reason."""


@dataclass
class Opened:
    plaintext_sha256: str
    plaintext_length: int
    chunks: int
    problems: list[str] = field(default_factory=list)


def unwrap_content_key(header: dict[str, Any], hq_key: HqPrivateKey) -> tuple[bytes, bytes]:
    """Return (content key, nonce prefix) from a segment header."""
    want = fingerprint(public_der(hq_key.public_key()))
    if header.get("hq_key") != want:
        raise DecryptError(
            f"segment is sealed to headquarters key {str(header.get('hq_key'))[:16]}..., not {want[:16]}..."
        )
    try:
        wrapped = b64decode_strict(str(header["enc"]))
        prefix_hex = str(header["nonce_prefix"])
        if len(prefix_hex) != 14:
            raise ValueError("nonce prefix is not 7 bytes")
        prefix = bytes.fromhex(prefix_hex)
    except (KeyError, ValueError) as exc:
        raise DecryptError(f"malformed header: {exc}") from exc
    bare = {k: v for k, v in header.items() if k != "enc"}
    try:
        key = open_sealed(wrapped, hq_key, key_info(bare), suite=str(header.get("suite")))
    except SealError as exc:
        raise DecryptError(f"content key: {exc}") from exc
    return key, prefix


def open_segment(
    path: Path, hq_key: HqPrivateKey, sink: Callable[[bytes], None], recovered: bool = False
) -> Opened:
    """Decrypt every chunk of ``path`` in one pass into ``sink`` (:func:`open_stream` on the file)."""
    with path.open("rb") as fh:
        return open_stream(fh, hq_key, sink, recovered)


def open_stream(
    fh: BinaryIO, hq_key: HqPrivateKey, sink: Callable[[bytes], None], recovered: bool = False
) -> Opened:
    """Decrypt every chunk of the segment read from ``fh`` in one pass into ``sink``; authentication
    failures are reported. ``fh`` is read front to back once and never seeked (a pipe or a socket
    will do).

    A chunk is decrypted once the next record shows whether it was the last one. A segment
    salvaged after a power cut (``recovered``) ends at its last complete chunk, which was
    never flagged final: its end is attested by the signed manifest instead.
    """
    result = Opened("", 0, 0)
    digest = hashlib.sha256()
    state: dict[str, Any] = {"dec": None, "held": None}

    def on_header(header: dict[str, Any], body: bytes) -> None:
        key, prefix = unwrap_content_key(header, hq_key)
        state["dec"] = StreamDecryptor(key, prefix, hashlib.sha256(body).digest())

    def emit(body: bytes, last: bool, either: bool = False) -> None:
        if result.problems:
            return
        try:
            pt = state["dec"].decrypt(body, last=last)
        except StreamError as exc:
            if not either:
                result.problems.append(str(exc))
                return
            try:  # a salvaged segment may or may not have reached its final chunk before the cut
                pt = state["dec"].decrypt(body, last=not last)
            except StreamError:
                result.problems.append(str(exc))
                return
        digest.update(pt)
        result.plaintext_length += len(pt)
        result.chunks += 1
        sink(pt)

    def on_chunk(_: int, body: bytes) -> None:
        if state["held"] is not None:
            emit(state["held"], last=False)
        state["held"] = body

    structure = scan(fh, on_chunk, on_header)
    if structure.header is None:
        raise DecryptError("no segment header (an event entry, or a broken file)")
    if state["held"] is not None:
        emit(state["held"], last=structure.manifest_record is not None and not recovered, either=recovered)
    if not result.problems and not recovered and not state["dec"].finished:
        result.problems.append("stream ends without its final chunk (truncated)")
    result.plaintext_sha256 = digest.hexdigest()
    return result


def open_metadata(signed: SignedManifest, hq_key: HqPrivateKey) -> dict[str, Any] | None:
    """Open the manifest's sealed metadata (GNSS fixes, notes), or None when it has none."""
    sealed = signed.manifest.get("sealed")
    if not sealed:
        return None
    return open_sealed_metadata(str(signed.manifest["device_id"]), signed.seq, str(sealed), hq_key)


def open_sealed_metadata(device_id: str, seq: int, sealed: str, hq_key: HqPrivateKey) -> dict[str, Any]:
    """Open the ``sealed`` member of (device, seq)'s manifest: its GNSS fixes and notes."""
    info = sealed_info(device_id, seq)
    try:
        raw = open_sealed(b64decode_strict(str(sealed)), hq_key, info)
        value = canonical.loads(raw)
    except (SealError, ValueError) as exc:  # CanonicalError and a bad base64 are ValueErrors
        raise DecryptError(f"sealed metadata: {exc}") from exc
    if not isinstance(value, dict):
        raise DecryptError("sealed metadata is not an object")
    return value


def scan_path(path: Path) -> Scan:
    with path.open("rb") as fh:
        return scan(fh)
