"""A recorder fed by real encoders on a fake clock, for unit tests."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric import x25519

from agent.chainlog import ChainLog, FileOpener, OsSegmentFile
from agent.evidence.manifest import parse_manifest_record
from agent.evidence.segment import scan
from agent.media.audio import AudioEncoder
from agent.media.encoders import VideoEncoder
from agent.recorder import Recorder, RecorderSettings
from agent.state import StateFile
from agent.store import Store
from hal.audio import AudioChunk
from hal.camera import VideoFrame
from tests.evidence_util import MemorySigner
from tests.fakes import FakeClock

FPS = 10
W, H = 64, 48
S = 1_000_000_000


class Rig:
    """A recorder fed by real encoders, one frame (and 100 ms of audio) per fake-clock tick."""

    def __init__(
        self,
        tmp_path: Path,
        pre_event_s: float = 2.0,
        segment_s: float = 4.0,
        opener: FileOpener = OsSegmentFile,
        signer: MemorySigner | None = None,
        hq: x25519.X25519PrivateKey | None = None,
        store_class: type[Store] = Store,
    ) -> None:
        self.clock = FakeClock()
        self.signer = signer or MemorySigner()
        self.hq = hq or x25519.X25519PrivateKey.generate()
        self.store = store_class(tmp_path / "index.sqlite", self.clock)
        self.dir = tmp_path
        self.chain = self.restart_chain(opener)
        self.video = VideoEncoder("chest", W, H, FPS, 1, gop_frames=FPS, bitrate_bps=200_000)
        self.audio = AudioEncoder("audio", 48000, 1)
        self.rec = Recorder(
            chain=self.chain,
            store=self.store,
            clock=self.clock,
            settings=RecorderSettings(
                segment_ns=round(segment_s * S),
                pre_event_ns=round(pre_event_s * S),
                pre_event_audio=False,
                checkpoint_ns=S,
                firmware="test",
            ),
            tracks=[self.video.spec, self.audio.spec],
            anchor="chest",
            state_file=StateFile(tmp_path / "state.json"),
            request_keyframes=self.video.request_keyframe,
            on_space_fault=self._space_fault,
        )
        self.space_faults = 0  # how often the recorder asked the storage maintainer to measure now
        self.chain.event("boot")
        self.frame = 0
        self.fed_video_ns: list[int] = []

    def tick(self, n: int = 1) -> None:
        for _ in range(n):
            mono = self.clock.monotonic_ns()
            img = np.full((H * 3 // 2, W), (self.frame * 7) % 255, dtype=np.uint8)
            vf = VideoFrame("chest", self.frame, mono, mono, W, H, "yuv420p", img)
            for p in self.video.encode(vf):
                self.rec.step(p)
            samples = np.zeros((4800, 1), dtype=np.int16)
            chunk = AudioChunk(self.frame, mono, mono, 48000, 1, self.frame * 4800, samples)
            for p in self.audio.encode(chunk):
                self.rec.step(p)
            self.fed_video_ns.append(mono)
            self.frame += 1
            self.clock.advance_ns(S // FPS)
            self.rec.step(None)

    def _space_fault(self) -> None:
        self.space_faults += 1

    def restart_chain(self, opener: FileOpener = OsSegmentFile) -> ChainLog:
        """A new chain log on the same store and files, as the next start of the unit makes it."""
        return ChainLog(
            self.dir,
            signer=self.signer,
            hq_public=self.hq.public_key(),
            device_id="unit-r",
            boot_id=str(uuid.uuid4()),
            firmware="test",
            config_sha256="cd" * 32,
            store=self.store,
            clock=self.clock,
            chunk_bytes=64 * 1024,
            opener=opener,
        )

    def manifests(self) -> list[dict[str, Any]]:
        out = []
        for path in sorted((self.dir / "segments").glob("*.bcs")):
            with path.open("rb") as fh:
                s = scan(fh)
            assert s.manifest_record is not None
            out.append(parse_manifest_record(s.manifest_record).manifest)
        return out


