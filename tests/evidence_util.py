"""Building real evidence (real keys, real crypto) for tests."""

from __future__ import annotations

import io
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from agent.evidence.format import GENESIS_PREV, segment_filename
from agent.evidence.keys import HqPrivateKey, HqPublicKey, public_pem
from agent.evidence.segment import SegmentWriter, write_event

CONFIG_SHA = "ab" * 32


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
        self, payload: bytes | None = None, duration_ns: int = 2_000_000_000, checkpoints: int = 1, gap_ns: int = 0
    ) -> Path:
        payload = payload if payload is not None else os.urandom(150_000)
        self.mono_ns += gap_ns
        buf = io.BytesIO()
        w = SegmentWriter(
            buf,
            signer=self.signer,
            hq_public=self.hq_public,
            device_id=self.device_id,
            boot_id=self.boot_id,
            segment_id=str(uuid.uuid4()),
            chunk_bytes=self.chunk_bytes,
        )
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
            },
            firmware="test",
            config_sha256=CONFIG_SHA,
            time=time_fields(start, self.mono_ns),
            flags=[],
            sealed_meta={"gnss": [{"lat_e7": 515000000, "lon_e7": -1200000}]},
        )
        return self._store(buf.getvalue(), result.signed.hash)

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
