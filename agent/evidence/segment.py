"""Writing a segment as its bytes arrive, an event entry, and the manifest of a salvaged segment.

The file layout is described in :mod:`agent.evidence.segscan`, which reads it.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

from agent.evidence import canonical
from agent.evidence.format import (
    BACKGROUND_FLAG,
    CTX_CHECKPOINT,
    CTX_SEALED,
    CTX_SEGMENT_KEY,
    FORMAT_VERSION,
    GENESIS_PREV,
    KEY_LEN,
    MAGIC,
    MAX_CHUNK_BYTES,
    MIN_CHUNK_BYTES,
    NONCE_PREFIX_LEN,
    REC_CHECKPOINT,
    REC_DATA,
    REC_HEADER,
    REC_MANIFEST,
)
from agent.evidence.keys import HqPublicKey, fingerprint, public_der
from agent.evidence.manifest import SignedManifest, base_fields, sign_manifest
from agent.evidence.sealing import seal, suite_name
from agent.evidence.segscan import (
    RECORD_HEAD,
    Checkpoint,
    Record,
    Salvage,
    Scan,
    SegmentError,
    iter_records,
    plan_salvage,
    scan,
)
from agent.evidence.stream import StreamEncryptor
from hal.keystore import KeyStore

__all__ = [
    "Checkpoint",
    "Record",
    "Salvage",
    "Scan",
    "SealResult",
    "SegmentError",
    "SegmentWriter",
    "Sink",
    "iter_records",
    "key_info",
    "plan_salvage",
    "scan",
    "seal_metadata",
    "seal_salvaged",
    "sealed_info",
    "write_event",
]

class Sink(Protocol):
    def write(self, data: bytes, /) -> int: ...

    def flush(self) -> None: ...


_RESERVED = frozenset(
    {"format", "type", "device_id", "seq", "boot_id", "prev", "firmware", "config_sha256", "time", "flags",
     "sealed", "segment_id", "ciphertext", "plaintext", "recovery"}
)


def _merge_fields(manifest: dict[str, Any], fields: dict[str, Any]) -> None:
    """Add the caller's segment fields; the ones the library computes cannot be overridden."""
    clash = _RESERVED & fields.keys()
    if clash:
        raise SegmentError(f"fields {sorted(clash)} are set by the evidence library, not the caller")
    manifest.update(fields)


def key_info(header_without_enc: dict[str, Any]) -> bytes:
    """HPKE ``info`` for the content key: binds the wrapped key to its header."""
    return CTX_SEGMENT_KEY + canonical.dumps(header_without_enc)


def sealed_info(device_id: str, seq: int) -> bytes:
    """HPKE ``info`` for sealed metadata: binds it to one chain entry."""
    return CTX_SEALED + canonical.dumps({"device_id": device_id, "seq": seq})


def seal_metadata(meta: dict[str, Any], hq_public: HqPublicKey, device_id: str, seq: int) -> str:
    return base64.b64encode(seal(canonical.dumps(meta), hq_public, sealed_info(device_id, seq))).decode()


@dataclass(frozen=True, slots=True)
class SealResult:
    signed: SignedManifest
    bytes_total: int
    chunks: int


class SegmentWriter:
    """Seals one segment while its plaintext arrives; plaintext exists only in memory.

    ``write`` buffers and emits full chunks of ``chunk_bytes``; ``checkpoint`` also emits
    the partial chunk, appends a signed checkpoint of the running ciphertext hash and makes
    everything durable (``sync`` is called, e.g. ``os.fsync``), so a power cut loses at most
    what arrived since. ``finish`` emits the final chunk and the signed manifest. Not
    thread-safe: one owner calls it. Never holds the content key after ``finish``.
    """

    def __init__(
        self,
        sink: Sink,
        *,
        signer: KeyStore,
        hq_public: HqPublicKey,
        device_id: str,
        boot_id: str,
        segment_id: str,
        chunk_bytes: int = MIN_CHUNK_BYTES,
        sync: Callable[[], None] | None = None,
        started: dict[str, Any] | None = None,
    ) -> None:
        """``started`` goes into the header as-is (the agent puts ``mono_ns``, ``utc_ns`` and
        ``recording_id`` there), so a segment cut short by a power loss can still be sealed."""
        if not MIN_CHUNK_BYTES <= chunk_bytes <= MAX_CHUNK_BYTES:
            raise ValueError(f"chunk_bytes must be within {MIN_CHUNK_BYTES}..{MAX_CHUNK_BYTES}")
        self._sink = sink
        self._signer = signer
        self._hq_public = hq_public
        self._device_id = device_id
        self._boot_id = boot_id
        self._segment_id = segment_id
        self._chunk_bytes = chunk_bytes
        self._sync = sync
        self._buf = bytearray()
        self._pt_hash = hashlib.sha256()
        self._pt_len = 0
        self._ct_hash = hashlib.sha256()
        self._offset = 0
        self._checkpoints = 0
        self._closed = False

        content_key = os.urandom(KEY_LEN)
        prefix = os.urandom(NONCE_PREFIX_LEN)
        header: dict[str, Any] = {
            "format": FORMAT_VERSION,
            "type": "segment-header",
            "device_id": device_id,
            "boot_id": boot_id,
            "segment_id": segment_id,
            "suite": suite_name(hq_public),
            "hq_key": fingerprint(public_der(hq_public)),
            "aead": "AES-256-GCM-STREAM",
            "nonce_prefix": prefix.hex(),
            "chunk_bytes": chunk_bytes,
            "started": started or {},
        }
        wrapped = seal(content_key, hq_public, key_info(header))
        header["enc"] = base64.b64encode(wrapped).decode()
        header_body = canonical.dumps(header)
        self.header_sha256 = hashlib.sha256(header_body).hexdigest()
        self._enc = StreamEncryptor(content_key, prefix, bytes.fromhex(self.header_sha256))
        del content_key
        self._raw(MAGIC)
        self._record(REC_HEADER, header_body)

    @property
    def plaintext_bytes(self) -> int:
        return self._pt_len

    @property
    def bytes_written(self) -> int:
        return self._offset

    def _raw(self, data: bytes) -> None:
        self._sink.write(data)
        self._ct_hash.update(data)
        self._offset += len(data)

    def _record(self, rtype: int, body: bytes) -> None:
        self._raw(RECORD_HEAD.pack(rtype, len(body)))
        self._raw(body)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._closed:
            raise SegmentError("segment already finished")
        self._pt_hash.update(data)
        self._pt_len += len(data)
        self._buf += data
        size = self._chunk_bytes
        if len(self._buf) >= size:
            view = memoryview(self._buf)
            n = len(self._buf) // size
            for i in range(n):
                self._record(REC_DATA, self._enc.encrypt(bytes(view[i * size : (i + 1) * size])))
            view.release()
            del self._buf[: n * size]
        return len(data)

    def checkpoint(self, mono_ns: int) -> None:
        """Emit buffered plaintext, sign the running hash, and make the file durable."""
        if self._closed:
            raise SegmentError("segment already finished")
        if self._buf:
            self._record(REC_DATA, self._enc.encrypt(bytes(self._buf)))
            self._buf.clear()
        body = canonical.dumps(
            {
                "segment_id": self._segment_id,
                "chunks": self._enc.chunks,
                "offset": self._offset,
                "sha256": self._ct_hash.hexdigest(),
                "mono_ns": mono_ns,
            }
        )
        self._record(REC_CHECKPOINT, body + self._signer.sign(CTX_CHECKPOINT + body))
        self._checkpoints += 1
        self._durable()

    def _durable(self) -> None:
        self._sink.flush()
        if self._sync is not None:
            self._sync()

    def finish(
        self,
        *,
        seq: int,
        prev: str | None,
        fields: dict[str, Any],
        firmware: str,
        config_sha256: str,
        time: dict[str, Any],
        flags: list[str],
        sealed_meta: dict[str, Any] | None = None,
    ) -> SealResult:
        """Seal: final chunk, then the signed manifest carrying ``fields`` (tracks, trigger, marks...)."""
        if self._closed:
            raise SegmentError("segment already finished")
        self._record(REC_DATA, self._enc.encrypt(bytes(self._buf), last=True))
        self._buf.clear()
        self._closed = True
        manifest = base_fields(
            kind="segment",
            device_id=self._device_id,
            seq=seq,
            boot_id=self._boot_id,
            prev=prev,
            firmware=firmware,
            config_sha256=config_sha256,
            time=time,
            flags=flags,
            sealed=seal_metadata(sealed_meta, self._hq_public, self._device_id, seq) if sealed_meta else None,
        )
        _merge_fields(manifest, fields)
        manifest["segment_id"] = self._segment_id
        manifest["ciphertext"] = {
            "sha256": self._ct_hash.hexdigest(),
            "length": self._offset,
            "chunks": self._enc.chunks,
            "checkpoints": self._checkpoints,
            "header_sha256": self.header_sha256,
        }
        manifest["plaintext"] = {"sha256": self._pt_hash.hexdigest(), "length": self._pt_len}
        signed = sign_manifest(manifest, self._signer)
        self._record(REC_MANIFEST, signed.record_body())
        self._durable()
        return SealResult(signed, self._offset, self._enc.chunks)


def write_event(
    sink: Sink,
    *,
    signer: KeyStore,
    device_id: str,
    seq: int,
    boot_id: str,
    prev: str | None,
    event: str,
    detail: dict[str, Any],
    firmware: str,
    config_sha256: str,
    time: dict[str, Any],
    flags: list[str] | None = None,
    sealed: str | None = None,
) -> SignedManifest:
    """Write an event entry (``MAGIC`` + ``M``); the caller makes it durable."""
    manifest = base_fields(
        kind="event",
        device_id=device_id,
        seq=seq,
        boot_id=boot_id,
        prev=prev,
        firmware=firmware,
        config_sha256=config_sha256,
        time=time,
        flags=flags,
        sealed=sealed,
    )
    manifest["event"] = event
    manifest["detail"] = detail
    signed = sign_manifest(manifest, signer)
    body = signed.record_body()
    sink.write(MAGIC + RECORD_HEAD.pack(REC_MANIFEST, len(body)) + body)
    return signed


def seal_salvaged(
    fh: BinaryIO,
    salvage: Salvage,
    header: dict[str, Any],
    *,
    signer: KeyStore,
    hq_public: HqPublicKey | None,
    seq: int,
    prev: str | None,
    fields: dict[str, Any],
    firmware: str,
    config_sha256: str,
    time: dict[str, Any],
    flags: list[str],
) -> SignedManifest:
    """Append the manifest of a salvaged segment to ``fh`` (already truncated to ``keep_bytes``
    and positioned at its end). Its plaintext is unknown to the device: ``plaintext`` is null,
    and its final chunk carries no last flag; the signed length and hash fix its end instead."""
    manifest = base_fields(
        kind="segment",
        device_id=str(header["device_id"]),
        seq=seq,
        boot_id=str(header["boot_id"]),
        prev=prev,
        firmware=firmware,
        config_sha256=config_sha256,
        time=time,
        flags=sorted(set(flags) | {"recovered"}),
    )
    _merge_fields(manifest, fields)
    manifest["segment_id"] = header["segment_id"]
    manifest["ciphertext"] = {
        "sha256": salvage.prefix_sha256,
        "length": salvage.keep_bytes,
        "chunks": salvage.chunks,
        "checkpoints": salvage.checkpoints,
        "header_sha256": hashlib.sha256(canonical.dumps(header)).hexdigest(),
    }
    manifest["plaintext"] = None
    manifest["recovery"] = {
        "attested_chunks": salvage.attested_chunks,
        "attested_mono_ns": salvage.attested_mono_ns,
        "dropped_tail_bytes": salvage.dropped_bytes,
    }
    signed = sign_manifest(manifest, signer)
    body = signed.record_body()
    fh.write(RECORD_HEAD.pack(REC_MANIFEST, len(body)) + body)
    return signed


COPY_BYTES = 1024 * 1024


def reseal_copy(
    src: BinaryIO,
    dst: BinaryIO,
    ring: SignedManifest,
    *,
    signer: KeyStore,
    seq: int,
    prev: str | None,
    background: dict[str, Any],
) -> SignedManifest:
    """Copy a background-ring segment into the device's chain at ``seq`` (section 8.9): its bytes
    before the manifest unchanged (the unit cannot decrypt them, and need not: nothing in the
    header, chunks or checkpoints names a chain position), then a manifest signed now with the
    ring manifest's content claims, this chain's ``seq`` and ``prev``, the flag ``background``
    and the member ``background`` (``ring_seq``, ``ring_manifest_sha256``, ``request_id``).

    Raises SegmentError when the ring file's bytes are not the ones its manifest signed.
    """
    m = ring.manifest
    length, want = int(m["ciphertext"]["length"]), str(m["ciphertext"]["sha256"])
    digest, left = hashlib.sha256(), length
    while left:
        block = src.read(min(COPY_BYTES, left))
        if not block:
            raise SegmentError(f"ring segment {ring.seq} is shorter than its manifest says")
        digest.update(block)
        dst.write(block)
        left -= len(block)
    if digest.hexdigest() != want:
        raise SegmentError(f"ring segment {ring.seq}: its bytes are not the ones its manifest signed")
    # the ring's own chain member goes; sealed metadata would be bound to the ring's seq (8.6): none
    manifest = {k: v for k, v in m.items() if k not in ("chain", "sealed")}
    manifest.update(seq=seq, prev=prev or GENESIS_PREV, trigger="background", recording_id=None,
                    flags=sorted(set(m["flags"]) | {BACKGROUND_FLAG}),
                    background={"ring_seq": ring.seq, "ring_manifest_sha256": ring.hash, **background})
    signed = sign_manifest(manifest, signer)
    body = signed.record_body()
    dst.write(RECORD_HEAD.pack(REC_MANIFEST, len(body)) + body)
    return signed
