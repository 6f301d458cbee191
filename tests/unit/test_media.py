"""Encoders and the segment muxer on synthetic HAL frames, checked by probing and decoding them with PyAV."""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import av
import numpy as np
import numpy.typing as npt
import pytest

from agent.media import (
    AudioEncoder,
    EncodedPacket,
    MediaError,
    SegmentMuxer,
    ThermalEncoder,
    TrackSpec,
    VideoEncoder,
)
from hal.audio import AudioChunk
from hal.camera import VideoFrame
from hal.thermal import ThermalFrame
from tests.media_probe import ProbedPacket, ProbedStream, ProbeError, probe

T0_NS = 5_000_000_000_000  # an arbitrary host monotonic time, far from zero
FPS = 30
FRAME_NS = 1_000_000_000 // FPS
THERMAL_HZ = 8.7
RATE_HZ = 48_000
CHUNK_SAMPLES = 500  # deliberately not a multiple of the Opus frame
DURATION_S = 3


class MemorySink:
    """What the encrypting writer looks like to the muxer: write() only, never seeks."""

    def __init__(self, max_write: int | None = None) -> None:
        self.buffer = bytearray()
        self.writes = 0
        self._max_write = max_write

    def write(self, data: bytes) -> int:
        accepted = data if self._max_write is None else data[: self._max_write]
        self.buffer += accepted
        self.writes += 1
        return len(accepted)

    def seekable(self) -> bool:
        return False


class FailingSink(MemorySink):
    """Runs out of space after ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self._limit = limit

    def write(self, data: bytes) -> int:
        if len(self.buffer) + len(data) > self._limit:
            raise OSError(28, "No space left on device")
        return super().write(data)


def video_frames(camera: str, width: int, height: int, count: int, start: int = 0) -> Iterable[VideoFrame]:
    """A moving gradient with a noisy patch, in HAL yuv420p layout ((h * 3 / 2, w) planes)."""
    rng = np.random.default_rng(7)
    base = np.tile((np.arange(width) % 256).astype(np.uint8), (height * 3 // 2, 1))
    for index in range(start, start + count):
        data = np.roll(base, index * 4, axis=1)
        data[16:80, 16:80] = rng.integers(0, 255, (64, 64), dtype=np.uint8)
        yield VideoFrame(camera, index, T0_NS + index * FRAME_NS, index, width, height, "yuv420p", data)


def audio_chunks(seconds: float, rate_hz: int = RATE_HZ) -> Iterable[AudioChunk]:
    """A 440 Hz tone in chunks whose mono_ns is exactly the chunk's first sample time."""
    for index in range(int(seconds * rate_hz) // CHUNK_SAMPLES):
        first = index * CHUNK_SAMPLES
        t = np.arange(first, first + CHUNK_SAMPLES) / rate_hz
        samples = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16).reshape(-1, 1)
        yield AudioChunk(index, T0_NS + first * 1_000_000_000 // rate_hz, 0, rate_hz, 1, first, samples)


def thermal_frames(count: int) -> list[ThermalFrame]:
    rng = np.random.default_rng(3)
    frames = []
    for index in range(count):
        data = (29_315 + rng.integers(0, 4_000, (120, 160))).astype(np.uint16)  # ~20..60 degC in cK
        frames.append(ThermalFrame(index, T0_NS + round(index * 1e9 / THERMAL_HZ), 0, 160, 120, data))
    return frames


def mux(tracks: Sequence[TrackSpec], packets: Iterable[EncodedPacket], start_ns: int, title: str = "",
        metadata: dict[str, str] | None = None) -> tuple[bytes, SegmentMuxer]:
    sink = MemorySink()
    muxer = SegmentMuxer(sink, tracks, start_ns, title, metadata)
    for packet in sorted(packets, key=lambda p: p.dts_ns):
        muxer.write(packet)
    muxer.close()
    return bytes(sink.buffer), muxer


def probe_streams(data: bytes) -> tuple[ProbedStream, ...]:
    """Per stream: codec, size, title, and the frames decoded (ffprobe's -count_frames)."""
    return probe(data).streams


def probe_packets(data: bytes) -> dict[int, tuple[ProbedPacket, ...]]:
    return {s.index: s.packets for s in probe(data).streams}


@dataclass
class Recording:
    specs: list[TrackSpec]
    packets: list[EncodedPacket]
    thermal_source: list[npt.NDArray[np.uint16]]

    def of(self, track: str) -> list[EncodedPacket]:
        return [p for p in self.packets if p.track == track]


@pytest.fixture(scope="module")
def recording() -> Recording:
    """3 s of 1280x720@30 video, 48 kHz Opus and 8.7 Hz thermal, encoded once for the module."""
    video = VideoEncoder("chest", 1280, 720, FPS, gop_frames=30)
    audio = AudioEncoder("mic")
    thermal = ThermalEncoder("thermal")
    packets: list[EncodedPacket] = []
    for frame in video_frames("chest", 1280, 720, DURATION_S * FPS):
        packets += video.encode(frame)
    for chunk in audio_chunks(DURATION_S):
        packets += audio.encode(chunk)
    sources = thermal_frames(int(DURATION_S * THERMAL_HZ) + 1)
    for thermal_frame in sources:
        packets += thermal.encode(thermal_frame)
    for encoder in (video, audio, thermal):
        packets += encoder.flush()
        encoder.close()
    return Recording([video.spec, audio.spec, thermal.spec], packets, [f.data for f in sources])


@pytest.fixture(scope="module")
def segment(recording: Recording) -> bytes:
    data, muxer = mux(recording.specs, recording.packets, min(p.pts_ns for p in recording.packets),
                      title="unit test", metadata={"device": "bc-0001"})
    assert muxer.frames_written()["chest"] == DURATION_S * FPS
    return data


def test_encoders_report_their_tracks(recording: Recording) -> None:
    video, audio, thermal = recording.specs
    assert (video.kind, video.codec, video.width, video.height, video.pixel_format) == (
        "video", "h264", 1280, 720, "yuv420p")
    assert video.extradata and video.extradata.startswith(b"\x00\x00\x00\x01")  # SPS/PPS, Annex B
    assert (audio.codec, audio.sample_rate_hz, audio.channels) == ("opus", 48_000, 1)
    assert audio.extradata and audio.extradata.startswith(b"OpusHead")
    assert (thermal.kind, thermal.codec, thermal.pixel_format) == ("thermal", "ffv1", "gray16le")
    assert (thermal.rate_num, thermal.rate_den) == (87, 10)


def test_packets_are_on_the_monotonic_timeline(recording: Recording) -> None:
    chest = recording.of("chest")
    assert [p.pts_ns for p in chest] == [T0_NS + i * FRAME_NS for i in range(DURATION_S * FPS)]
    assert all(p.dts_ns == p.pts_ns and p.frames == 1 for p in chest)
    assert [i for i, p in enumerate(chest) if p.keyframe] == [0, 30, 60]
    mic = recording.of("mic")
    assert all(p.keyframe for p in mic)
    # Opus primes with 312 samples, so the first packet starts 6.5 ms before the first sample
    # and packet k starts k * 960 samples later.
    first = mic[0].pts_ns
    assert first == T0_NS - 312 * 1_000_000_000 // RATE_HZ
    for k, packet in enumerate(mic[:-1]):
        assert abs(packet.pts_ns - (first + k * 20_000_000)) <= 1
        assert packet.frames == 960 and packet.duration_ns == 20_000_000
    thermal = recording.of("thermal")
    assert all(p.keyframe for p in thermal)
    assert [p.pts_ns for p in thermal] == [T0_NS + round(i * 1e9 / THERMAL_HZ) for i in range(len(thermal))]


def test_segment_has_three_tracks_with_expected_codecs_and_frame_counts(recording: Recording,
                                                                         segment: bytes) -> None:
    probed = probe(segment)
    assert [(s.codec, s.title) for s in probed.streams] == [("h264", "chest"), ("opus", "mic"), ("ffv1", "thermal")]
    video, audio, thermal = probed.streams
    assert (video.width, video.height, video.pix_fmt) == (1280, 720, "yuv420p")
    assert (audio.sample_rate_hz, audio.channels) == (48_000, 1)
    assert (thermal.width, thermal.height, thermal.pix_fmt) == (160, 120, "gray16le")
    assert video.frames_decoded == DURATION_S * FPS
    assert audio.frames_decoded == len(recording.of("mic"))
    assert thermal.frames_decoded == len(recording.thermal_source)
    assert probed.tags["title"] == "unit test" and probed.tags["DEVICE"] == "bc-0001"


def test_the_probe_fails_on_damaged_media_as_ffprobe_would(segment: bytes) -> None:
    """The PyAV probe is as strict as ``ffprobe -v error`` with an empty stderr: a decoder's
    complaint fails it, even where the decoder conceals the damage and returns frames."""
    damaged = bytearray(segment)
    middle = len(damaged) // 2
    for i in range(middle, middle + 2000, 7):
        damaged[i] ^= 0x5A
    with pytest.raises(ProbeError):
        probe(bytes(damaged))


def test_segment_track_durations_match_within_one_frame(recording: Recording, segment: bytes) -> None:
    packets = probe_packets(segment)
    expected = {
        0: (DURATION_S, 1 / FPS),
        1: (sum(p.frames for p in recording.of("mic")) / RATE_HZ, 0.020),
        2: (len(recording.thermal_source) / THERMAL_HZ, 1 / THERMAL_HZ),
    }
    for index, (duration_s, frame_s) in expected.items():
        first, last = packets[index][0], packets[index][-1]
        span = last.pts_s + last.duration_s - first.pts_s
        assert abs(span - duration_s) < frame_s, (index, span, duration_s)
    # The segment starts at 0 with the earliest packet (audio, primed before the first frame).
    assert packets[1][0].pts_s == 0.0
    assert packets[0][0].pts_s == pytest.approx(0.0065, abs=0.001)


def test_segment_decodes_with_pyav(recording: Recording, segment: bytes) -> None:
    decoded = {0: 0, 1: 0, 2: 0}
    samples = 0
    first_time_s: dict[int, float] = {}
    with av.open(io.BytesIO(segment), "r") as container:
        for packet in container.demux():
            for frame in packet.decode():
                assert isinstance(frame, av.VideoFrame | av.AudioFrame) and frame.time is not None
                decoded[packet.stream.index] += 1
                first_time_s.setdefault(packet.stream.index, frame.time)
                if isinstance(frame, av.AudioFrame):
                    samples += frame.samples
                else:
                    assert (frame.width, frame.height) == ((1280, 720), (160, 120))[packet.stream.index // 2]
    assert decoded == {0: DURATION_S * FPS, 1: len(recording.of("mic")), 2: len(recording.thermal_source)}
    # No pre-skip is signalled (real segments start mid-stream, long after the encoder's priming),
    # so this stream-start segment also decodes the 312 priming samples; the last frame is padded.
    assert DURATION_S * RATE_HZ <= samples <= DURATION_S * RATE_HZ + 960
    # Audio and video stay in sync: the first real sample and the first frame were both taken at T0,
    # the priming samples sit just before it.
    assert first_time_s[1] == pytest.approx(first_time_s[0] - 312 / RATE_HZ, abs=0.001)


def test_thermal_round_trips_bit_exactly(recording: Recording, segment: bytes) -> None:
    with av.open(io.BytesIO(segment), "r") as container:
        stream = next(s for s in container.streams.video if s.metadata.get("title") == "thermal")
        decoded = [frame.to_ndarray() for frame in container.decode(stream)]
    assert len(decoded) == len(recording.thermal_source)
    for got, want in zip(decoded, recording.thermal_source, strict=True):
        assert got.dtype == np.uint16
        np.testing.assert_array_equal(got, want)


def test_consecutive_segments_cut_at_a_keyframe_hold_every_frame_once(recording: Recording) -> None:
    cut_ns = [p for p in recording.of("chest") if p.keyframe][1].pts_ns
    first_start = min(p.pts_ns for p in recording.packets)
    parts = [
        (first_start, [p for p in recording.packets if p.pts_ns < cut_ns]),
        (cut_ns, [p for p in recording.packets if p.pts_ns >= cut_ns]),
    ]
    counts = {0: 0, 1: 0, 2: 0}
    video_times_ns: list[int] = []
    for start_ns, packets in parts:
        data, muxer = mux(recording.specs, packets, start_ns, metadata={"start_mono_ns": str(start_ns)})
        assert sum(muxer.packets_written().values()) == len(packets)
        probed = probe(data)
        assert int(probed.tags["START_MONO_NS"]) == start_ns
        video = probed.streams[0]
        assert video.packets[0].keyframe  # each segment starts decodable
        video_times_ns += [start_ns + round(p.pts_s * 1e9) for p in video.packets]
        for stream in probed.streams:
            counts[stream.index] += stream.frames_decoded
    assert counts == {0: 90, 1: len(recording.of("mic")), 2: len(recording.thermal_source)}
    # Matroska keeps milliseconds: every frame is where it was, to within one.
    assert len(video_times_ns) == 90
    for index, time_ns in enumerate(video_times_ns):
        assert abs(time_ns - (T0_NS + index * FRAME_NS)) <= 1_000_000, index


def test_request_keyframe_makes_the_next_frame_an_idr() -> None:
    encoder = VideoEncoder("chest", 320, 240, FPS, gop_frames=250)
    packets: list[EncodedPacket] = []
    for frame in video_frames("chest", 320, 240, 20):
        if frame.index == 7:
            encoder.request_keyframe()
        packets += encoder.encode(frame)
    packets += encoder.flush()
    assert [i for i, p in enumerate(packets) if p.keyframe] == [0, 7]
    assert encoder.get_status()["keyframes_requested"] == 1
    # A segment starting at the requested keyframe decodes from its first frame.
    data, _ = mux([encoder.spec], packets[7:], packets[7].pts_ns)
    with av.open(io.BytesIO(data), "r") as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 13 and frames[0].pts == 0


@pytest.mark.parametrize(("width", "height"), [(320, 240), (322, 242)])
def test_video_round_trip_keeps_the_picture(width: int, height: int) -> None:
    """The HAL (h * 3 / 2, w) yuv420p stack reaches the codec plane by plane, whatever the height."""
    encoder = VideoEncoder("chest", width, height, FPS, bitrate_bps=2_000_000)
    y = np.add.outer(np.arange(height), np.arange(width)).astype(np.uint8)
    u = np.full(height * width // 4, 90, np.uint8)
    v = np.full(height * width // 4, 170, np.uint8)
    data = np.concatenate((y.ravel(), u, v)).reshape(height * 3 // 2, width)
    frame = VideoFrame("chest", 0, T0_NS, 0, width, height, "yuv420p", data)
    packets = encoder.encode(frame) + encoder.flush()
    data_mkv, _ = mux([encoder.spec], packets, T0_NS)
    with av.open(io.BytesIO(data_mkv), "r") as container:
        (decoded,) = list(container.decode(video=0))
    planes = decoded.to_ndarray(format="yuv420p")
    assert planes.shape == data.shape
    assert np.abs(planes[:height].astype(int) - y).mean() < 2
    assert np.abs(planes[height:].astype(int).ravel()[: u.size] - 90).mean() < 2
    assert np.abs(planes[height:].astype(int).ravel()[u.size:] - 170).mean() < 2


def test_two_cameras_share_one_file() -> None:
    chest = VideoEncoder("chest", 640, 360, FPS)
    shoulder = VideoEncoder("shoulder", 320, 240, FPS)
    packets: list[EncodedPacket] = []
    for encoder, frames in ((chest, video_frames("chest", 640, 360, 45)),
                            (shoulder, video_frames("shoulder", 320, 240, 40))):
        for frame in frames:
            packets += encoder.encode(frame)
        packets += encoder.flush()
    data, muxer = mux([chest.spec, shoulder.spec], packets, T0_NS)
    assert muxer.frames_written() == {"chest": 45, "shoulder": 40}
    streams = probe_streams(data)
    assert [(s.codec, s.width, s.height, s.frames_decoded, s.title)
            for s in streams] == [("h264", 640, 360, 45, "chest"), ("h264", 320, 240, 40, "shoulder")]


def test_aac_audio_muxes_and_counts() -> None:
    encoder = AudioEncoder("mic", codec="aac", bitrate_bps=96_000)
    packets: list[EncodedPacket] = []
    for chunk in audio_chunks(1.0):
        packets += encoder.encode(chunk)
    packets += encoder.flush()
    assert encoder.spec.codec == "aac" and encoder.spec.extradata
    assert packets[1].frames == 1024
    data, _ = mux([encoder.spec], packets, packets[0].pts_ns)
    (stream,) = probe_streams(data)
    assert stream.codec == "aac" and stream.frames_decoded == len(packets)


def test_audio_gap_from_a_driver_overrun_shows_in_pts() -> None:
    encoder = AudioEncoder("mic")
    silence = np.zeros((960, 1), np.int16)
    late_ns = T0_NS + 10 * 20_000_000 + 100_000_000  # 100 ms of samples lost before chunk 10
    packets: list[EncodedPacket] = []
    for index in range(20):
        mono_ns = T0_NS + index * 20_000_000 + (100_000_000 if index >= 10 else 0)
        chunk = AudioChunk(index, mono_ns, 0, RATE_HZ, 1, index * 960, silence,
                           dropped_before=4_800 if index == 10 else 0)
        packets += encoder.encode(chunk)
    # Packet 11 starts 312 samples before chunk 11's first sample (Opus priming), after the gap.
    assert packets[11].pts_ns == late_ns + 20_000_000 - 6_500_000
    assert packets[9].pts_ns == T0_NS + 9 * 20_000_000 - 6_500_000
    assert encoder.get_status()["samples_dropped"] == 4_800


def test_short_writes_lose_nothing(recording: Recording, segment: bytes) -> None:
    sink = MemorySink(max_write=1000)
    muxer = SegmentMuxer(sink, recording.specs, min(p.pts_ns for p in recording.packets))
    for packet in sorted(recording.packets, key=lambda p: p.dts_ns):
        muxer.write(packet)
    muxer.close()
    assert muxer.bytes_written == len(sink.buffer) and sink.writes > len(sink.buffer) // 1000
    assert [s.frames_decoded for s in probe_streams(bytes(sink.buffer))] == [
        90, len(recording.of("mic")), 27]


def test_sink_error_becomes_media_error_with_context(recording: Recording) -> None:
    start_ns = min(p.pts_ns for p in recording.packets)
    muxer = SegmentMuxer(FailingSink(limit=300_000), recording.specs, start_ns)
    with pytest.raises(MediaError, match=r"(writing '\w+' packet at \+[\d.]+ s|finishing).*No space left") as caught:
        for packet in sorted(recording.packets, key=lambda p: p.dts_ns):
            muxer.write(packet)
        muxer.close()
    assert isinstance(caught.value.__cause__, OSError)
    with pytest.raises(MediaError, match="broken earlier by"):
        muxer.write(recording.packets[0])
    muxer.close()  # releases quietly after the reported failure


def test_sink_error_on_header_is_reported_by_the_constructor(recording: Recording) -> None:
    with pytest.raises(MediaError, match="writing the Matroska header") as caught:
        SegmentMuxer(FailingSink(limit=0), recording.specs, T0_NS)
    assert isinstance(caught.value.__cause__, OSError)


def test_muxer_rejects_packets_it_cannot_place(recording: Recording) -> None:
    chest = recording.of("chest")
    muxer = SegmentMuxer(MemorySink(), recording.specs[:1], chest[1].pts_ns)
    with pytest.raises(MediaError, match="before the segment"):
        muxer.write(chest[0])
    with pytest.raises(MediaError, match="no track 'mic'"):
        muxer.write(recording.of("mic")[0])
    muxer.close()
    with pytest.raises(MediaError, match="after close"):
        muxer.write(chest[1])


def test_encoders_reject_mismatched_input() -> None:
    video = VideoEncoder("chest", 320, 240, FPS)
    (frame,) = video_frames("chest", 320, 240, 1)
    video.encode(frame)
    with pytest.raises(MediaError, match="does not follow"):
        video.encode(frame)
    (small,) = video_frames("chest", 160, 120, 1, start=5)
    with pytest.raises(MediaError, match="160x120"):
        video.encode(small)
    audio = AudioEncoder("mic")
    with pytest.raises(MediaError, match="44100 Hz"):
        audio.encode(AudioChunk(0, T0_NS, 0, 44_100, 1, 0, np.zeros((100, 1), np.int16)))
    video.close()
    with pytest.raises(MediaError, match="closed"):
        video.encode(small)
