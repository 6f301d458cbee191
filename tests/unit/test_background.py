"""Record after the fact: the pure decisions (decimation, coverage of a range, what storage
pressure frees), and the background recorder writing a real ring whose range is copied into the
unit's chain and verifies there, flagged ``background``, with headquarters' key."""

from __future__ import annotations

import io
import time
from pathlib import Path

import av
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric import x25519

from agent.background.export import RingExporter
from agent.background.policy import NS_PER_S, cover, expired, keep_frame, to_free
from agent.background.recorder import BackgroundRecorder, BackgroundSettings
from agent.background.ring import BackgroundRing
from agent.background.setup import build_background
from agent.chainlog import ChainLog
from agent.config import ConfigError, parse_config
from agent.evidence import canonical
from agent.evidence.decrypt import open_segment
from agent.evidence.format import CTX_MANIFEST, REC_MANIFEST
from agent.evidence.manifest import parse_manifest_record
from agent.evidence.segment import scan
from agent.evidence.segscan import RECORD_HEAD
from agent.evidence.verify import verify_path
from agent.media.audio import AudioEncoder
from agent.media.packets import EncodedPacket, TrackSpec
from agent.storage_policy import StorageThresholds, ring_first
from agent.store import RingEntry, Store
from agent.verify_cmd import background_lines
from hal.audio import AudioChunk
from hal.camera import VideoFrame
from tests.evidence_util import MemorySigner
from tests.fakes import FakeClock

MS = 1_000_000
EARLIER_BOOT = "b0a1c2d3-0000-4000-8000-000000000001"
LATER_BOOT = "b0a1c2d3-0000-4000-8000-000000000002"


def entry(seq: int, start_s: float, end_s: float, size: int = 1000) -> RingEntry:
    return RingEntry(seq, f"background/{seq:010d}.bcs", "boot", 0, 0, int(start_s * NS_PER_S), int(end_s * NS_PER_S),
                     "ab" * 32, size)


def test_frames_are_decimated_to_the_background_rate_without_bursts() -> None:
    due, kept = 0, []
    for i in range(90):  # 3 s of a 30 fps camera
        keep, due = keep_frame(i * 33_333_333, due, 100 * MS)
        if keep:
            kept.append(i)
    assert len(kept) == 30 and kept[:4] == [0, 3, 6, 9]
    keep, due = keep_frame(10 * NS_PER_S, due, 100 * MS)  # after a gap: restart, no catch-up burst
    assert keep and due == 10 * NS_PER_S + 100 * MS
    assert keep_frame(10 * NS_PER_S + 50 * MS, due, 100 * MS)[0] is False


def test_coverage_of_a_range_says_what_is_left_and_what_rotated_out() -> None:
    ring = [entry(5, 100, 160), entry(6, 160, 220), entry(7, 220, 280)]
    whole = cover(ring, 130 * NS_PER_S, 250 * NS_PER_S)
    assert [e.seq for e in whole.entries] == [5, 6, 7] and whole.complete
    partly = cover(ring, 40 * NS_PER_S, 200 * NS_PER_S)  # 40..100 rotated out
    assert [e.seq for e in partly.entries] == [5, 6] and partly.missing == ((40 * NS_PER_S, 100 * NS_PER_S),)
    gone = cover(ring, 0, 50 * NS_PER_S)
    assert gone.entries == () and gone.missing == ((0, 50 * NS_PER_S),) and not gone.complete


def test_the_ring_keeps_its_age_and_gives_way_first_under_pressure() -> None:
    ring = [entry(1, 0, 60, 500), entry(2, 60, 120, 500), entry(3, 120, 180, 500)]
    assert [e.seq for e in expired(ring, 200 * NS_PER_S, keep_s=70)] == [1, 2]  # ended before 130 s
    assert [e.seq for e in expired(ring, 200 * NS_PER_S, keep_s=100)] == [1]
    assert [e.seq for e in to_free(ring, 600)] == [1, 2]
    thresholds = StorageThresholds(warn_free_bytes=10_000, critical_free_bytes=5_000, full_free_bytes=2_000,
                                   reserve_free_bytes=1_000, hysteresis_bytes=1_000)
    assert ring_first(ring, 20_000, thresholds) == []  # no pressure: the ring keeps its hours
    assert [e.seq for e in ring_first(ring, 10_200, thresholds)] == [1, 2]  # 800 short of 11,000


def camera_frames(count: int, fps: int = 30, start_ns: int = 5 * NS_PER_S) -> list[VideoFrame]:
    rng = np.random.default_rng(7)
    frames = []
    for i in range(count):
        data = rng.integers(0, 255, size=(240 * 3 // 2, 320), dtype=np.uint8)
        frames.append(VideoFrame("chest", i, start_ns + i * NS_PER_S // fps, 0, 320, 240, "yuv420p", data))
    return frames


def record(ring: BackgroundRing, clock: FakeClock, seconds: int) -> BackgroundRecorder:
    """The background recorder fed ``seconds`` of a 30 fps camera, then stopped."""
    bg = BackgroundRecorder(BackgroundSettings("chest", 160, 120, 10, 100_000, 3600, 2.0), ring, clock)
    bg.start()
    for frame in camera_frames(30 * seconds):
        offer_in_step(bg, frame)
    bg.stop()
    return bg


def offer_in_step(bg: BackgroundRecorder, frame: VideoFrame) -> None:
    """Offer a frame and wait until the background thread has taken it: the fed frames come far
    faster than a camera's, and a loaded machine must not turn that into queue drops and holes."""
    bg.offer(frame)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        st = bg.get_status()
        if st["encoded"] + st["dropped"] >= st["offered"] or st["last_error"]:
            return
        time.sleep(0.0005)


@pytest.fixture
def unit(tmp_path: Path) -> dict[str, object]:
    clock = FakeClock(start_mono_ns=5 * NS_PER_S)
    store = Store(tmp_path / "index.sqlite", clock)
    signer, hq = MemorySigner(), x25519.X25519PrivateKey.generate()
    common = dict(signer=signer, hq_public=hq.public_key(), device_id="unit-bg", firmware="test",
                  config_sha256="cd" * 32, clock=clock, chunk_bytes=64 * 1024)
    # the ring was recorded in an earlier boot than the one copying it into the chain
    ring = BackgroundRing(tmp_path, store=store, boot_id=EARLIER_BOOT, **common)  # type: ignore[arg-type]
    chain = ChainLog(tmp_path, store=store, boot_id=LATER_BOOT, **common)  # type: ignore[arg-type]
    return {"clock": clock, "store": store, "signer": signer, "hq": hq, "ring": ring, "chain": chain, "dir": tmp_path}


def test_the_background_ring_is_sealed_chained_and_a_range_becomes_verifiable_evidence(unit: dict[str, object]) -> None:
    clock, store, ring, chain = unit["clock"], unit["store"], unit["ring"], unit["chain"]
    assert isinstance(clock, FakeClock) and isinstance(store, Store)
    assert isinstance(ring, BackgroundRing) and isinstance(chain, ChainLog)
    bg = record(ring, clock, seconds=7)
    status = bg.get_status()
    assert status["last_error"] is None and status["sealed"] >= 3
    entries = store.ring_entries()
    assert [e.seq for e in entries] == list(range(len(entries))) and len(entries) == status["sealed"]
    folder = Path(str(unit["dir"])) / "background"
    report = verify_path(folder, unit["signer"].public_key(), hq_key=unit["hq"])  # type: ignore[attr-defined]
    assert report.ok, [p.reason for p in report.problems]
    assert not list(folder.glob("*.part"))

    chain.event("boot", {"firmware": "test", "previous_state": None})
    start, end = entries[1].utc_start_ns, entries[2].utc_end_ns
    answer = RingExporter(ring, chain).export("hq:p-1", start, end, "ab" * 16)
    assert answer["ring_seqs"] == [entries[1].seq, entries[2].seq] and answer["missing"] == []
    assert answer["entries"] == [1, 2]
    chain.event("shutdown", {"reason": "stop requested"})
    segments = Path(str(unit["dir"])) / "segments"
    report = verify_path(segments, unit["signer"].public_key(), hq_key=unit["hq"])  # type: ignore[attr-defined]
    assert report.ok, [p.reason for p in report.problems]
    assert (report.segments, report.events) == (2, 2)
    assert [b.as_dict() for b in report.background] == [
        {"seq": 1, "ring_seq": entries[1].seq, "request_id": "ab" * 16},
        {"seq": 2, "ring_seq": entries[2].seq, "request_id": "ab" * 16},
    ]
    assert report.as_dict()["background"][0]["seq"] == 1
    assert background_lines(report.background) == [
        f"Background:  seq 1-2: 2 segments of the background ring, copied on headquarters' request {'ab' * 16}"]
    with (segments / "0000000001.bcs").open("rb") as fh:
        found = scan(fh)
    assert found.manifest_record is not None
    copied = parse_manifest_record(found.manifest_record).manifest
    assert "background" in copied["flags"] and copied["background"]["ring_seq"] == entries[1].seq
    assert copied["background"]["ring_manifest_sha256"] == entries[1].manifest_sha256
    assert copied["background"]["request_id"] == "ab" * 16 and "chain" not in copied
    assert copied["boot_id"] == EARLIER_BOOT  # the boot that recorded it, between the later boot's entries
    rows = {s.seq: s for s in store.segments()}
    assert rows[1].priority == 1 and "background" in rows[1].flags

    # A range that has partly rotated out is answered with what is left.
    removed = ring.remove([entries[0]], "test")
    assert removed == entries[0].bytes
    partly = RingExporter(ring, chain).export("hq:p-1", entries[0].utc_start_ns, entries[1].utc_end_ns, "cd" * 16)
    assert partly["ring_seqs"] == [entries[1].seq]
    assert partly["missing"] == [[entries[0].utc_start_ns, entries[1].utc_start_ns]]


def test_a_copy_whose_ring_bytes_were_altered_is_refused(unit: dict[str, object]) -> None:
    clock, store, ring, chain = unit["clock"], unit["store"], unit["ring"], unit["chain"]
    assert isinstance(clock, FakeClock) and isinstance(store, Store)
    assert isinstance(ring, BackgroundRing) and isinstance(chain, ChainLog)
    record(ring, clock, seconds=3)
    (first, *_) = store.ring_entries()
    path = Path(str(unit["dir"])) / first.path
    data = bytearray(path.read_bytes())
    data[200] ^= 0xFF
    path.write_bytes(bytes(data))
    answer = RingExporter(ring, chain).export("hq:p-1", first.utc_start_ns, first.utc_end_ns, "ab" * 16)
    assert answer["entries"] == [] and answer["missing"]
    assert chain.next_seq == 0  # nothing was added to the chain
    assert not list((Path(str(unit["dir"])) / "segments").glob("*.part"))


def test_a_background_segment_without_its_provenance_is_a_problem(unit: dict[str, object]) -> None:
    clock, ring, chain = unit["clock"], unit["ring"], unit["chain"]
    assert isinstance(clock, FakeClock) and isinstance(ring, BackgroundRing) and isinstance(chain, ChainLog)
    record(ring, clock, seconds=3)
    first = ring.entries()[0]
    RingExporter(ring, chain).export("hq:p-1", first.utc_start_ns, first.utc_end_ns, "ab" * 16)
    path = Path(str(unit["dir"])) / "segments" / "0000000000.bcs"
    data = path.read_bytes()
    with path.open("rb") as fh:
        found = scan(fh)
    assert found.manifest_record is not None
    manifest = dict(parse_manifest_record(found.manifest_record).manifest)
    del manifest["background"]
    json_bytes = canonical.dumps(manifest)  # signed by hand: the library refuses to sign it
    body = json_bytes + unit["signer"].sign(CTX_MANIFEST + json_bytes)  # type: ignore[attr-defined]
    cut = len(data) - len(found.manifest_record) - 5
    path.write_bytes(data[:cut] + RECORD_HEAD.pack(REC_MANIFEST, len(body)) + body)
    report = verify_path(path.parent, unit["signer"].public_key())  # type: ignore[attr-defined]
    assert any("background" in p.reason for p in report.problems), [p.reason for p in report.problems]


def audio_packets(seconds: int, start_ns: int = 5 * NS_PER_S) -> tuple[TrackSpec, list[EncodedPacket]]:
    """Real Opus packets of a tone, as the microphone's sensor thread gives the recorder."""
    encoder = AudioEncoder("audio", 48_000, 1)
    packets: list[EncodedPacket] = []
    tone = (np.sin(np.arange(4800) * 2 * np.pi * 440 / 48_000) * 8000).astype(np.int16).reshape(-1, 1)
    for i in range(seconds * 10):
        packets += encoder.encode(AudioChunk(i, start_ns + i * NS_PER_S // 10, 0, 48_000, 1, i * 4800, tone))
    return encoder.spec, packets


def test_background_audio_is_kept_except_while_muted(unit: dict[str, object]) -> None:
    clock, store, ring, chain = unit["clock"], unit["store"], unit["ring"], unit["chain"]
    assert isinstance(clock, FakeClock) and isinstance(store, Store)
    assert isinstance(ring, BackgroundRing) and isinstance(chain, ChainLog)
    spec, audio = audio_packets(6)
    muted_from, muted_to = 7 * NS_PER_S, 8 * NS_PER_S  # the officer muted for a second
    bg = BackgroundRecorder(BackgroundSettings("chest", 160, 120, 10, 100_000, 3600, 2.0, audio=True), ring,
                            clock, audio_track=spec)
    bg.start()
    muted_pts = [p.pts_ns for p in audio if muted_from <= p.pts_ns < muted_to]
    frames = camera_frames(30 * 6)
    for frame in frames:
        while audio and audio[0].pts_ns <= frame.mono_ns + NS_PER_S // 10:  # audio reaches the recorder a chunk late
            packet = audio.pop(0)
            bg.offer_audio(packet, muted=muted_from <= packet.pts_ns < muted_to)
        offer_in_step(bg, frame)
    bg.stop()
    status = bg.get_status()
    assert status["last_error"] is None and status["audio_muted"] == 50 and status["audio_dropped"] == 0
    entries = store.ring_entries()
    manifests = [ring.manifest_of(e).manifest for e in entries]
    assert all([t["name"] for t in m["tracks"]] == ["background", "audio"] for m in manifests)
    flagged = [("muted" in m["flags"]) for m in manifests]
    # a segment is flagged when a muted packet's time falls in it
    holds_muted = [any(e.mono_start_ns <= t < e.mono_end_ns for t in muted_pts) for e in entries]
    assert flagged == holds_muted and any(flagged) and not all(flagged)
    kept_samples = sum(next(t for t in m["tracks"] if t["name"] == "audio")["frames"] for m in manifests)
    assert 0 < kept_samples <= (300 - 50) * 960  # never a muted packet
    hq = unit["hq"]
    heard: list[int] = []
    for e in entries:
        plain = bytearray()
        open_segment(Path(str(unit["dir"])) / e.path, hq, plain.extend)  # type: ignore[arg-type]
        with av.open(io.BytesIO(bytes(plain))) as container:
            stream = container.streams.audio[0]
            heard += [e.mono_start_ns + int(p.pts * stream.time_base * NS_PER_S)
                      for p in container.demux(stream) if p.pts is not None]
    assert heard and not any(muted_from + NS_PER_S // 20 <= t < muted_to - NS_PER_S // 20 for t in heard)
    report = verify_path(Path(str(unit["dir"])) / "background", unit["signer"].public_key(),  # type: ignore[attr-defined]
                         hq_key=hq)  # type: ignore[arg-type]
    assert report.ok, [p.reason for p in report.problems]


def test_background_audio_on_needs_a_microphone() -> None:
    config = parse_config('[device]\nid = "u"\n[microphone]\nenabled = false\n[background]\nenabled = true\n'
                          'audio = "on"\n')
    with pytest.raises(ConfigError, match='background.audio: is "on" but no microphone records'):
        build_background(config, Path("/nonexistent"), store=None, signer=None, hq_public=None,  # type: ignore[arg-type]
                         boot_id="b", firmware="t", clock=FakeClock())
