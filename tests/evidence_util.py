"""Building real evidence (real keys, real crypto) for tests."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from agent.evidence import canonical
from agent.evidence.format import (
    CTX_CHECKPOINT,
    CTX_MANIFEST,
    GENESIS_PREV,
    MAGIC,
    REC_CHECKPOINT,
    REC_DATA,
    REC_HEADER,
    REC_MANIFEST,
    SIGNATURE_LEN,
    segment_filename,
)
from agent.evidence.keys import HqPrivateKey, HqPublicKey, public_pem
from agent.evidence.segment import (
    Record,
    SegmentWriter,
    iter_records,
    plan_salvage,
    scan,
    seal_salvaged,
    write_event,
)

CONFIG_SHA = "ab" * 32
# What the chain log puts in a salvaged segment's manifest (docs/evidence-format.md 8.8).
RECOVERED_FIELDS = {"recording_id": None, "trigger": "recovered", "container": "matroska", "tracks": [], "marks": []}


class MemorySigner:
    """An Ed25519 key held in memory: the KeyStore protocol without a file."""

    def __init__(self) -> None:
        self._key = ed25519.Ed25519PrivateKey.generate()

    def public_key(self) -> ed25519.Ed25519PublicKey:
        return self._key.public_key()

    def public_key_raw(self) -> bytes:
        return self.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)


def time_fields(mono_start: int, mono_end: int) -> dict[str, Any]:
    utc0 = 1_790_000_000_000_000_000
    return {
        "utc_start_ns": utc0 + mono_start,
        "utc_end_ns": utc0 + mono_end,
        "mono_start_ns": mono_start,
        "mono_end_ns": mono_end,
        "signed_mono_ns": mono_end,
        "source": "ntp",
        "synced": True,
        "uncertainty_ns": 10_000_000,
    }


@dataclass
class ChainBuilder:
    """Writes a device's chain into ``folder`` one entry at a time, as the agent does."""

    folder: Path
    signer: MemorySigner = field(default_factory=MemorySigner)
    hq_key: HqPrivateKey = field(default_factory=x25519.X25519PrivateKey.generate)
    device_id: str = "unit-test-1"
    boot_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    seq: int = 0
    prev: str = GENESIS_PREV
    mono_ns: int = 1_000_000_000
    chunk_bytes: int = 64 * 1024
    recording_id: str | None = None

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)

    @property
    def hq_public(self) -> HqPublicKey:
        return self.hq_key.public_key()

    def write_device_pub(self, path: Path) -> Path:
        path.write_bytes(public_pem(self.signer.public_key()))
        return path

    def event(self, name: str, detail: dict[str, Any] | None = None) -> Path:
        buf = io.BytesIO()
        signed = write_event(
            buf,
            signer=self.signer,
            device_id=self.device_id,
            seq=self.seq,
            boot_id=self.boot_id,
            prev=self.prev,
            event=name,
            detail=detail or {},
            firmware="test",
            config_sha256=CONFIG_SHA,
            time=time_fields(self.mono_ns, self.mono_ns),
        )
        return self._store(buf.getvalue(), signed.hash)

    def segment(
        self,
        payload: bytes | None = None,
        duration_ns: int = 2_000_000_000,
        checkpoints: int = 1,
        gap_ns: int = 0,
        fields: dict[str, Any] | None = None,
    ) -> Path:
        """A sealed segment; ``fields`` replace the test defaults (container, tracks...)."""
        payload = payload if payload is not None else os.urandom(150_000)
        self.mono_ns += gap_ns
        buf = io.BytesIO()
        w = self.writer(buf)
        step = max(1, len(payload) // (checkpoints + 1))
        for i in range(checkpoints + 1):
            w.write(payload[i * step : (i + 1) * step] if i < checkpoints else payload[i * step :])
            if i < checkpoints:
                w.checkpoint(self.mono_ns + i)
        start = self.mono_ns
        self.mono_ns += duration_ns
        result = w.finish(
            seq=self.seq,
            prev=self.prev,
            fields={
                "recording_id": self.recording_id,
                "trigger": "button",
                "container": "application/octet-stream",
                "tracks": [],
                "marks": [],
                **(fields or {}),
            },
            firmware="test",
            config_sha256=CONFIG_SHA,
            time=time_fields(start, self.mono_ns),
            flags=[],
            sealed_meta={"gnss": [{"lat_e7": 515000000, "lon_e7": -1200000}]},
        )
        return self._store(buf.getvalue(), result.signed.hash)

    def writer(self, sink: io.BytesIO, started: dict[str, Any] | None = None) -> SegmentWriter:
        return SegmentWriter(
            sink,
            signer=self.signer,
            hq_public=self.hq_public,
            device_id=self.device_id,
            boot_id=self.boot_id,
            segment_id=str(uuid.uuid4()),
            chunk_bytes=self.chunk_bytes,
            started=started,
        )

    def salvaged(self, flags: list[str], cut_after_final: bool = False, payload: bytes | None = None) -> Path:
        """A segment cut short by a power loss and salvaged as the chain log does, with ``flags``
        as given (the agent passes recovered and clock-unsynced). Cut after two checkpoints and a
        torn chunk, or (``cut_after_final``) after its final chunk, before its manifest. With
        ``payload`` (e.g. real media), both checkpoints attest it whole: the salvage keeps it all."""
        buf = io.BytesIO()
        started = {"mono_ns": self.mono_ns, "utc_ns": 1_790_000_000_000_000_000 + self.mono_ns, "recording_id": "r"}
        w = self.writer(buf, started)
        half = None if payload is None else len(payload) // 2
        w.write(os.urandom(70_000) if payload is None else payload[:half])
        w.checkpoint(self.mono_ns + 1)
        w.write(os.urandom(1000) if payload is None else payload[half:])
        if cut_after_final:
            fields = {"recording_id": "r", "trigger": "button", "container": "x", "tracks": [], "marks": []}
            t = time_fields(0, 1)
            w.finish(seq=0, prev=None, fields=fields, firmware="t", config_sha256=CONFIG_SHA, time=t, flags=[])
            data = buf.getvalue()
            data = data[: data.rindex(b"M\x00\x00")]  # the manifest never reached the disk
        else:
            w.checkpoint(self.mono_ns + 2)
            w.write(os.urandom(500))
            data = buf.getvalue() + b"D\x00\x00\x01\x00torn"  # a chunk torn by the power cut
        path = self.folder / "x.part"
        path.write_bytes(data)
        with path.open("rb") as fh:
            s = scan(fh)
        salvage = plan_salvage(s, len(data))
        assert salvage is not None and s.header is not None
        with path.open("r+b") as fh:
            fh.truncate(salvage.keep_bytes)
            fh.seek(salvage.keep_bytes)
            signed = seal_salvaged(
                fh,
                salvage,
                s.header,
                signer=self.signer,
                hq_public=self.hq_public,
                seq=self.seq,
                prev=self.prev,
                fields={**RECOVERED_FIELDS, "recording_id": "r"},
                firmware="test",
                config_sha256=CONFIG_SHA,
                time=time_fields(self.mono_ns, self.mono_ns + 2),
                flags=flags,
            )
        sealed = path.read_bytes()
        path.unlink()
        return self._store(sealed, signed.hash)

    def _store(self, data: bytes, manifest_hash: str) -> Path:
        path = self.folder / segment_filename(self.seq)
        path.write_bytes(data)
        self.seq += 1
        self.prev = manifest_hash
        return path

    def incident(self, segments: int = 3) -> list[Path]:
        """boot, record-start, N segments, record-stop, shutdown."""
        paths = [self.event("boot")]
        self.recording_id = str(uuid.uuid4())
        paths.append(self.event("record-start"))
        paths.extend(self.segment() for _ in range(segments))
        paths.append(self.event("record-stop"))
        self.recording_id = None
        paths.append(self.event("shutdown"))
        return paths


Records = list[tuple[int, bytes]]


def reseal(
    path: Path,
    signer: MemorySigner,
    *,
    header: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    records: Callable[[Records], Records] | None = None,
    manifest: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> Path:
    """Rewrite a sealed entry as a crafty writer holding the device key could: change its header,
    its records or its manifest, then recompute and re-sign every checkpoint and the manifest so
    that every hash and signature holds. Only what the verifier checks beyond that can catch it.
    The manifest is signed as given, without the library's shape check."""
    with path.open("rb") as fh:
        found = list(iter_records(fh))
    assert all(isinstance(r, Record) for r in found), found
    recs: Records = [(r.rtype, r.body) for r in found if isinstance(r, Record)]
    assert recs[-1][0] == REC_MANIFEST
    m: dict[str, Any] = canonical.loads(recs[-1][1][:-SIGNATURE_LEN])
    recs = recs[:-1]
    if header is not None:
        recs = [(t, canonical.dumps(header(canonical.loads(b))) if t == REC_HEADER else b) for t, b in recs]
    if records is not None:
        recs = records(recs)
    out = bytearray(MAGIC)
    chunks = checkpoints = 0
    header_sha = None
    for rtype, body in recs:
        if rtype == REC_CHECKPOINT:
            claimed = canonical.loads(body[:-SIGNATURE_LEN])
            claimed.update(chunks=chunks, offset=len(out), sha256=hashlib.sha256(out).hexdigest())
            cbody = canonical.dumps(claimed)
            body = cbody + signer.sign(CTX_CHECKPOINT + cbody)
            checkpoints += 1
        elif rtype == REC_DATA:
            chunks += 1
        elif rtype == REC_HEADER:
            header_sha = hashlib.sha256(body).hexdigest()
        out += struct.pack(">BI", rtype, len(body)) + body
    if m["type"] == "segment":
        m["ciphertext"] = {
            "sha256": hashlib.sha256(out).hexdigest(),
            "length": len(out),
            "chunks": chunks,
            "checkpoints": checkpoints,
            "header_sha256": header_sha or m["ciphertext"]["header_sha256"],
        }
    if manifest is not None:
        m = manifest(m)
    mbody = canonical.dumps(m)
    mrec = mbody + signer.sign(CTX_MANIFEST + mbody)
    out += struct.pack(">BI", REC_MANIFEST, len(mrec)) + mrec
    path.write_bytes(bytes(out))
    return path


def matroska(codec: str, frames: int) -> bytes:
    """A small real Matroska file of one video track: ``h264`` (keyframe every 10 frames) or
    ``ffv1`` (gray16le with slice CRCs, as the thermal track)."""
    import av
    import numpy as np

    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska") as c:
        st = c.add_stream("libx264" if codec == "h264" else "ffv1", rate=10)
        st.width, st.height = 64, 48
        if codec == "h264":
            st.pix_fmt, fmt = "yuv420p", "rgb24"
            st.options = {"g": "10", "preset": "ultrafast", "threads": "1"}  # the same bytes on any machine
        else:
            st.pix_fmt, st.options, fmt = "gray16le", {"level": "3", "slicecrc": "1"}, "gray16le"
        for i in range(frames):
            if codec == "h264":
                img = np.zeros((48, 64, 3), np.uint8)
                img[:, :, 0] = i * 8 % 256
                img[i % 48, :, 1] = 255
            else:
                img = (np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) * (i + 1)).astype(np.uint16)
            for packet in st.encode(av.VideoFrame.from_ndarray(img, format=fmt)):
                c.mux(packet)
        for packet in st.encode():
            c.mux(packet)
    return buf.getvalue()


def damage_packet(media: bytes, index: int, start: float = 0.5, length: int | None = None, xor: int = 0x5A) -> bytes:
    """``media`` with ``length`` bytes (default: to its end) from ``start`` (a fraction) of packet
    ``index`` of its first stream XORed with ``xor``, in place: the container still parses, the
    decoder meets a broken picture."""
    import av

    with av.open(io.BytesIO(media)) as c:
        packet = [bytes(p) for p in c.demux() if p.size][index]
    at = media.index(packet)
    first = int(len(packet) * start)
    out = bytearray(media)
    for i in range(first, len(packet) if length is None else first + length):
        out[at + i] ^= xor
    return bytes(out)
