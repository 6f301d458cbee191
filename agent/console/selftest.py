"""The self-test's checks: real work on the unit's own parts, each a clear pass or fail.

Nothing here touches evidence: sensors are watched through their workers' counters, encoders
are fresh ones fed synthetic frames, and the test segment is sealed into memory, verified with
public material only (the unit cannot decrypt) and thrown away.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.console.backend import FAIL, PASS, SKIP, WARN, SelftestItem
from agent.evidence.format import CTX_CHECKPOINT, CTX_MANIFEST
from agent.evidence.keys import HqPublicKey, verify_signature
from agent.evidence.manifest import ManifestError, parse_manifest_record
from agent.evidence.segment import SegmentWriter, scan
from agent.media.audio import AudioEncoder
from agent.media.encoders import ThermalEncoder, VideoEncoder
from agent.media.packets import EncodedPacket
from hal.audio import AudioChunk
from hal.camera import VideoFrame
from hal.clock import Clock
from hal.keystore import KeyStore
from hal.thermal import ThermalFrame

SENSOR_DEADLINE_S = 3.0
QUIET_SENSORS = ("inputs",)  # buttons report presses only: silence is normal
UTC_MIN_NS = 1_704_067_200 * 10**9  # 2024-01-01: a clock before this was never set
UTC_MAX_NS = 4_102_444_800 * 10**9  # 2100-01-01


class WorkerLike(Protocol):
    sensor: str

    def status(self) -> dict[str, object]: ...


def _items(status: dict[str, object]) -> int:
    value = status.get("items")
    return value if isinstance(value, int) else 0


def check_sensors(workers: Sequence[WorkerLike], clock: Clock, deadline_s: float = SENSOR_DEADLINE_S,
                  poll_s: float = 0.05) -> list[SelftestItem]:
    """Each sensor delivers at least one sample within ``deadline_s`` (its worker's count moves)."""
    start = {w.sensor: _items(w.status()) for w in workers}
    watched = [w for w in workers if w.sensor not in QUIET_SENSORS]
    done: dict[str, float] = {}  # sensor -> seconds until its first new sample
    t0 = clock.monotonic_ns()
    end_ns = t0 + round(deadline_s * 1e9)
    while len(done) < len(watched) and clock.monotonic_ns() < end_ns:
        clock.sleep(poll_s)
        for w in watched:
            if w.sensor not in done and _items(w.status()) > start[w.sensor]:
                done[w.sensor] = (clock.monotonic_ns() - t0) / 1e9
    out = []
    for w in workers:
        st = w.status()
        name = f"sensor {w.sensor}"
        if w.sensor in QUIET_SENSORS:
            ok = st.get("state") == "running"
            out.append(SelftestItem(name, PASS if ok else FAIL, f"state {st.get('state')} (presses only)"
                                    + ("" if ok else f": {st.get('last_error')}")))
        elif w.sensor in done:
            out.append(SelftestItem(name, PASS, f"delivering: a new sample within {done[w.sensor]:.2f} s"))
        else:
            out.append(SelftestItem(name, FAIL, f"no sample within {deadline_s:g} s (state {st.get('state')}, "
                                                f"last error {st.get('last_error') or 'none'})"))
    return out


def _video_frames(n: int, width: int = 64, height: int = 64) -> list[VideoFrame]:
    frames = []
    for i in range(n):
        data = np.full((height * 3 // 2, width), 16 + 20 * i, dtype=np.uint8)
        data[: height // 2, : width // 2] = 235
        frames.append(VideoFrame("selftest", i, 1_000_000 + i * 100_000_000, i, width, height, "yuv420p", data))
    return frames


def check_encoders(kinds: Sequence[str], audio_codec: str = "libopus") -> list[SelftestItem]:
    """A fresh encoder of each kind the unit records turns synthetic input into packets."""
    out = []
    for kind in dict.fromkeys(kinds):
        try:
            packets = _encode(kind, audio_codec)
        except Exception as exc:  # any failure of the codec library is the finding
            out.append(SelftestItem(f"encoder {kind}", FAIL, f"{type(exc).__name__}: {exc}"))
            continue
        if packets and packets[0].keyframe:
            size = sum(len(p.data) for p in packets)
            out.append(SelftestItem(f"encoder {kind}", PASS, f"{len(packets)} packets, {size} bytes"))
        else:
            out.append(SelftestItem(f"encoder {kind}", FAIL, "the encoder produced no usable packet"))
    return out


def _encode(kind: str, audio_codec: str) -> list[EncodedPacket]:
    packets: list[EncodedPacket] = []
    if kind == "video":
        with VideoEncoder("selftest", 64, 64, 10, bitrate_bps=200_000, gop_frames=10) as venc:
            for frame in _video_frames(3):
                packets += venc.encode(frame)
            packets += venc.flush()
    elif kind == "thermal":
        with ThermalEncoder("selftest", 32, 24, 9, 1) as tenc:
            data = np.full((24, 32), 30_000, dtype=np.uint16)
            packets += tenc.encode(ThermalFrame(0, 1_000_000, 0, 32, 24, data))
            packets += tenc.flush()
    elif kind == "audio":
        with AudioEncoder("selftest", 48000, 1, codec=audio_codec, bitrate_bps=32000) as aenc:
            tone = (np.sin(np.arange(4800) * 0.1) * 8000).astype(np.int16).reshape(-1, 1)
            packets += aenc.encode(AudioChunk(0, 1_000_000, 0, 48000, 1, 0, tone))
            packets += aenc.flush()
    else:
        raise ValueError(f"unknown track kind {kind!r}")
    return packets


def check_sealing(signer: KeyStore, hq_public: HqPublicKey, device_id: str, chunk_bytes: int,
                  clock: Clock) -> SelftestItem:
    """Seal a small test segment into memory and verify it with the device's public key."""
    name = "seal test segment"
    try:
        problems = _seal_and_verify(signer, hq_public, device_id, chunk_bytes, clock)
    except Exception as exc:  # a failing key store or cipher is the finding
        return SelftestItem(name, FAIL, f"{type(exc).__name__}: {exc}")
    if problems:
        return SelftestItem(name, FAIL, "; ".join(problems))
    return SelftestItem(name, PASS, "sealed, signed and verified in memory")


def _seal_and_verify(signer: KeyStore, hq_public: HqPublicKey, device_id: str, chunk_bytes: int,
                     clock: Clock) -> list[str]:
    buf = io.BytesIO()
    mono, utc = clock.monotonic_ns(), clock.utc_ns()
    # a device id no real chain has, so this entry can never pass for evidence
    writer = SegmentWriter(buf, signer=signer, hq_public=hq_public, device_id=f"{device_id}.selftest",
                           boot_id="selftest", segment_id="selftest", chunk_bytes=chunk_bytes)
    writer.write(b"\x00bodycam self-test\x00" * 4096)
    writer.checkpoint(mono)
    writer.write(b"tail")
    q = clock.quality()
    time: dict[str, Any] = {"mono_start_ns": mono, "mono_end_ns": mono, "signed_mono_ns": mono,
                            "utc_start_ns": max(0, utc), "utc_end_ns": max(0, utc), "source": q.source.value,
                            "synced": q.synced}
    writer.finish(seq=0, prev=None, fields={"container": "selftest", "trigger": "selftest", "tracks": [],
                                            "marks": []},
                  firmware="selftest", config_sha256="0" * 64, time=time, flags=[])
    return verify_in_memory(buf.getvalue(), signer)


def verify_in_memory(data: bytes, signer: KeyStore) -> list[str]:
    """What is wrong with a sealed segment held in memory, checked with public material only."""
    public = ed25519.Ed25519PublicKey.from_public_bytes(signer.public_key_raw())
    s = scan(io.BytesIO(data))
    problems = list(s.problems)
    if s.manifest_record is None or s.header_body is None:
        return problems or ["no manifest or header"]
    try:
        signed = parse_manifest_record(s.manifest_record)
    except ManifestError as exc:
        return [*problems, f"manifest: {exc}"]
    if not verify_signature(public, signed.signature, CTX_MANIFEST + signed.body):
        problems.append("manifest signature does not verify")
    c = signed.manifest["ciphertext"]
    if s.prefix_sha256 != c["sha256"] or s.manifest_offset != c["length"]:
        problems.append("ciphertext hash or length differs from the manifest")
    if s.chunks != c["chunks"] or hashlib.sha256(s.header_body).hexdigest() != c["header_sha256"]:
        problems.append("chunk count or header hash differs from the manifest")
    for cp in s.checkpoints:
        if not verify_signature(public, cp.signature, CTX_CHECKPOINT + cp.body) or \
                cp.claimed.get("sha256") != cp.actual_sha256:
            problems.append("a checkpoint does not verify")
    return problems


def check_store(integrity_check: Callable[[], str]) -> SelftestItem:
    try:
        verdict = integrity_check()
    except Exception as exc:  # an unreadable index is the finding
        return SelftestItem("evidence index", FAIL, f"{type(exc).__name__}: {exc}")
    if verdict == "ok":
        return SelftestItem("evidence index", PASS, "SQLite integrity check ok")
    return SelftestItem("evidence index", FAIL, verdict.splitlines()[0][:120])


def check_clock(clock: Clock) -> SelftestItem:
    """UTC plausible, monotonic time moving, and how good the time source is."""
    m1, utc = clock.monotonic_ns(), clock.utc_ns()
    clock.sleep(0.01)
    m2 = clock.monotonic_ns()
    if m2 <= m1:
        return SelftestItem("clock", FAIL, "monotonic time does not advance")
    if not UTC_MIN_NS <= utc < UTC_MAX_NS:
        return SelftestItem("clock", FAIL, f"UTC implausible ({utc / 1e9:.0f} s since 1970): never set")
    q = clock.quality()
    if not q.synced:
        return SelftestItem("clock", WARN, f"not synced ({q.source.value}): segments flagged clock-unsynced")
    unc = "" if q.uncertainty_ns is None else f", within {q.uncertainty_ns / 1e6:g} ms"
    return SelftestItem("clock", PASS, f"synced to {q.source.value}{unc}")


def check_storage(status: dict[str, Any]) -> SelftestItem:
    level = status.get("level")
    hours = status.get("hours_left")
    detail = f"level {level}, {'?' if not isinstance(hours, int | float) else f'{hours:.1f}'} h of recording left"
    if level == "ok":
        return SelftestItem("storage", PASS, detail)
    if level in ("low", "critical"):
        return SelftestItem("storage", WARN, detail)
    return SelftestItem("storage", FAIL if level else SKIP, detail)
