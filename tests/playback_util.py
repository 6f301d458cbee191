"""A real recording (H.264 camera, FFV1 thermal, Opus audio, GNSS fixes, marks) ingested by a real
headquarters index and store, for the evidence search and playback tests."""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from agent.chainlog import ChainLog
from agent.evidence.keys import fingerprint, public_der, public_pem
from agent.evidence.manifest import parse_manifest_record
from agent.evidence.segment import scan
from agent.media.audio import AudioEncoder
from agent.media.encoders import ThermalEncoder, VideoEncoder
from agent.recorder import Recorder, RecorderSettings
from agent.state import StateFile
from agent.store import Store
from hal.audio import AudioChunk
from hal.camera import VideoFrame
from hal.gnss import FixMode, GnssFix
from hal.thermal import ThermalFrame
from hq.audit import Auditor
from hq.index import Index
from hq.ingest import Ingestor
from hq.records import Upload
from hq.storage import EvidenceStore, UploadArea
from tests.evidence_util import MemorySigner
from tests.fakes import FakeClock

FPS = 10
W, H = 64, 48
TW, TH = 32, 24
S = 1_000_000_000


def luma(frame: int) -> int:
    """The camera's picture at ``frame``: a flat grey whose level says which frame it is."""
    return 16 + (frame * 9) % 220


@dataclass
class Recording:
    device_id: str
    signer: MemorySigner
    hq_key: x25519.X25519PrivateKey
    files: list[Path]
    manifests: list[dict[str, Any]]
    recording_id: str
    fixes: list[tuple[float, float]] = field(default_factory=list)

    def segments(self) -> list[dict[str, Any]]:
        return [m for m in self.manifests if m["type"] == "segment"]


Picture = Callable[[int, int], npt.NDArray[np.uint8]]  # (frame index, UTC ns) -> yuv420p, H * 3 // 2 rows


def grey(frame: int, _utc_ns: int) -> npt.NDArray[np.uint8]:
    img = np.full((H * 3 // 2, W), 128, dtype=np.uint8)
    img[:H] = luma(frame)
    return img


def record(folder: Path, device_id: str = "unit-p1", seconds: float = 5.0, segment_s: float = 2.0,
           marks_at_s: tuple[float, ...] = (1.5,), hq_key: x25519.X25519PrivateKey | None = None,
           picture: Picture = grey, size: tuple[int, int] = (W, H), fps: int = FPS) -> Recording:
    """Record ``seconds`` of ``picture`` (by default a grey whose level tells the frames apart) with
    thermal, audio and GNSS fixes, cut into ``segment_s`` segments, on a fake clock."""
    folder.mkdir(parents=True, exist_ok=True)
    clock = FakeClock()
    signer = MemorySigner()
    hq = hq_key or x25519.X25519PrivateKey.generate()
    store = Store(folder / "index.sqlite", clock)
    chain = ChainLog(folder, signer=signer, hq_public=hq.public_key(), device_id=device_id,
                     boot_id=str(uuid.uuid4()), firmware="test", config_sha256="cd" * 32, store=store, clock=clock,
                     chunk_bytes=64 * 1024)
    width, height = size
    video = VideoEncoder("chest", width, height, fps, 1, gop_frames=fps,
                         bitrate_bps=max(300_000, width * height * fps // 8))
    thermal = ThermalEncoder("thermal", TW, TH, fps, 1)
    audio = AudioEncoder("audio", 48000, 1)
    rec = Recorder(chain=chain, store=store, clock=clock,
                   settings=RecorderSettings(segment_ns=round(segment_s * S), pre_event_ns=0, pre_event_audio=False,
                                             checkpoint_ns=S, firmware="test"),
                   tracks=[video.spec, thermal.spec, audio.spec], anchor="chest",
                   state_file=StateFile(folder / "state.json"), request_keyframes=video.request_keyframe)
    chain.event("boot")
    rec.step_command("start")
    fixes = []
    marks = {round(t * fps) for t in marks_at_s}
    for frame in range(round(seconds * fps)):
        mono = clock.monotonic_ns()
        img = picture(frame, clock.utc_ns())
        for p in video.encode(VideoFrame("chest", frame, mono, mono, width, height, "yuv420p", img)):
            rec.step(p)
        heat = np.full((TH, TW), 29315, dtype=np.uint16)  # 20 C, a 36 C person in the middle
        heat[6:18, 12:20] = 30915
        for p in thermal.encode(ThermalFrame(frame, mono, mono, TW, TH, heat)):
            rec.step(p)
        per_frame = 48000 // fps
        chunk = AudioChunk(frame, mono, mono, 48000, 1, frame * per_frame, np.zeros((per_frame, 1), dtype=np.int16))
        for p in audio.encode(chunk):
            rec.step(p)
        if frame % fps == 0:
            lat, lon = 51.5 + frame / 10_000, -0.12 - frame / 20_000
            fixes.append((lat, lon))
            rec.step(GnssFix(mono, clock.utc_ns(), FixMode.FIX_3D, lat, lon, 20.0, 3.0))
        if frame in marks:
            rec.step_command("mark", note=f"mark at frame {frame}")
        clock.advance_ns(S // fps)
        rec.step(None)
    rec.step_command("stop")
    files = sorted((folder / "segments").glob("*.bcs"))
    manifests = []
    for path in files:
        with path.open("rb") as fh:
            s = scan(fh)
        assert s.manifest_record is not None
        manifests.append(parse_manifest_record(s.manifest_record).manifest)
    rid = next(m["recording_id"] for m in manifests if m["type"] == "segment")
    store.close()
    return Recording(device_id, signer, hq, files, manifests, rid, fixes)


def ingest(index: Index, evidence: EvidenceStore, root: Path, rec: Recording, now_ns: int) -> None:
    """Enrol the unit and ingest every entry as headquarters does after an upload."""
    pub = rec.signer.public_key()
    if index.device(rec.device_id) is None:
        index.enroll(rec.device_id, public_pem(pub).decode(), fingerprint(public_der(pub)), now_ns)
    area = UploadArea(root)
    ingestor = Ingestor(index, evidence, area, ed25519.Ed25519PrivateKey.generate(),
                        Auditor(index, "hq-ingest", lambda: now_ns), lambda: now_ns)
    for path, m in zip(rec.files, rec.manifests, strict=True):
        data = path.read_bytes()
        uid = uuid.uuid4().hex
        upload = Upload(uid, rec.device_id, m["seq"], path.name, hashlib.sha256(data).hexdigest(), len(data),
                        "receiving", now_ns, now_ns)
        index.add_upload(upload)
        area.create(uid)
        shutil.copyfile(path, area.path(uid))
        outcome = ingestor.ingest(upload)
        assert outcome.action == "store", outcome


def plaintext_on_disk(folders: Iterable[Path], since_s: float, probes: list[bytes],
                      basetemp: Path | None = None) -> list[tuple[Path, list[int]]]:
    """Every regular file under ``folders`` written since ``since_s`` (up to 64 MiB) that holds any
    of ``probes`` (runs of decrypted media), with the indices of those it holds. Other pytest
    runs' folders beside ``basetemp`` (this run's) are not searched: a test running at the same
    time may write the same deterministic media on purpose (a court export's viewing copies)."""
    others = set() if basetemp is None else {d for d in basetemp.parent.iterdir() if d != basetemp}
    found = []
    for folder in folders:
        for dirpath, dirnames, names in os.walk(folder):
            dirnames[:] = [d for d in dirnames if Path(dirpath) / d not in others]
            for name in names:
                path = Path(dirpath) / name
                try:
                    st = path.lstat()
                    if not path.is_file() or path.is_symlink() or st.st_mtime < since_s or st.st_size > 2**26:
                        continue
                    data = path.read_bytes()
                except OSError:
                    continue
                held = [i for i, probe in enumerate(probes) if probe in data]
                if held:
                    found.append((path, held))
    return found
