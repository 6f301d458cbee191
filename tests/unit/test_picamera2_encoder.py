"""picamera2's own H.264 encoder: the pure decisions, the driver over a hand-written fake of the
library (real H.264 from libx264), its selection by the unit, and the packets it gives the
recorder, muxed and decoded."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import av
import pytest

from agent.config import ConfigError, parse_config
from agent.media.camera_h264 import CameraH264Track, KeyframeLatch
from agent.media.encoder_select import EncoderRequest, ProbeResult
from agent.media.muxer import SegmentMuxer
from agent.media.packets import EncodedPacket, MediaError
from agent.unit import NOT_OWN_ENCODER, build_sensors, list_encoders
from drivers.h264_annexb import NAL_PPS, NAL_SPS, START_CODE, has_idr, nal_type, nal_units, parameter_sets
from drivers.picamera2_h264 import MAX_PIPELINE_NS, UnitQueue, host_offset_ns, judge_probe
from drivers.registry import Registry
from drivers.system_clock import SystemClock
from hal.camera import H264_ENCODER, EncodedVideo, H264Settings, VideoFormat
from hal.common import SensorError
from tests.picamera2_fake import FakePicamera2Library, fake_driver, v4l2_sysfs

SPS, PPS, IDR, SLICE = b"\x67\x42\x00\x1e", b"\x68\xce\x38\x80", b"\x65\x88\x84", b"\x41\x9a\x02"
SETTINGS = H264Settings(500_000, 30)


def annexb(*units: bytes) -> bytes:
    return b"".join(START_CODE + u for u in units)


# ---- pure: Annex B, timestamps, the probe's verdict, the queue ---------------------------------


def test_parameter_sets_are_read_from_the_stream() -> None:
    key = annexb(SPS, PPS, IDR) + b"\x00\x00\x01" + SLICE  # a 3-byte start code too
    assert [nal_type(u) for u in nal_units(key)] == [NAL_SPS, NAL_PPS, 5, 1]
    assert parameter_sets(key) == annexb(SPS, PPS) and has_idr(key)
    assert parameter_sets(annexb(IDR)) is None and not has_idr(annexb(SLICE))
    assert nal_units(b"junk" + annexb(SLICE)) == [SLICE]


def test_sensor_time_is_the_hosts_when_it_can_be_else_anchored() -> None:
    assert host_offset_ns(sensor_ns=10_000_000_000, arrival_ns=10_040_000_000) == 0  # 40 ms behind: same clock
    assert host_offset_ns(10_000_000_000, 10_000_000_000 + MAX_PIPELINE_NS + 1) == MAX_PIPELINE_NS + 1
    assert host_offset_ns(5_000_000_000, 1_000_000_000) == -4_000_000_000  # ahead of the host: another clock


def test_the_probe_verdict() -> None:
    key, p = (True, annexb(SPS, PPS, IDR)), (False, annexb(SLICE))
    header, problem = judge_probe([key, p, p, p, p, p, key, p], forced_at=4, backlog=0)
    assert header == annexb(SPS, PPS) and problem == ""
    assert judge_probe([key, p, p, p, p, p, key], forced_at=4, backlog=2) == (annexb(SPS, PPS), "")
    late = judge_probe([key, p, p, p, p, p, p, p, key], forced_at=4, backlog=0)
    assert late == (None, "a requested keyframe (force_key_frame) did not come within 4 frames")
    short = judge_probe([key, p, p, p, p], forced_at=4, backlog=0)[1]
    assert short.endswith("did not come within 4 frames (the encoder gave 5 units)")
    assert judge_probe([(True, annexb(IDR)), p], 4, 0)[1].startswith("the first unit is not a keyframe with SPS/PPS")
    assert judge_probe([key, key, p, p, p, key], 4, 0)[1] == "keyframes came unasked (the GOP is not honoured)"
    assert judge_probe([], 4, 0) == (None, "the encoder gave no units")


def test_a_late_reader_loses_units_up_to_the_next_keyframe_and_asks_for_one() -> None:
    queue = UnitQueue(max_units=2)
    queue.put(b"k0", True, 0)
    queue.put(b"p1", False, 1)
    queue.put(b"p2", False, 2)  # full: dropped, and so is everything until a keyframe
    assert queue.take_keyframe_wish() and not queue.take_keyframe_wish()
    got = queue.get(0)
    assert got is not None and got.data == b"k0"
    queue.put(b"p3", False, 3)  # room again, but it cannot be decoded without p2
    queue.put(b"k4", True, 4)
    assert [(u.data, u.dropped_before) for u in (queue.get(0), queue.get(0)) if u] == [(b"p1", 0), (b"k4", 2)]
    assert queue.get(0) is None and queue.dropped_total == 2


def test_the_track_turns_units_into_packets_and_keyframe_wishes_into_a_latch() -> None:
    latch = KeyframeLatch()
    track = CameraH264Track("chest", VideoFormat(64, 48, 30), annexb(SPS, PPS), SETTINGS, latch)
    assert (track.spec.codec, track.spec.extradata, track.spec.rate_num) == ("h264", annexb(SPS, PPS), 30)
    track.request_keyframe()
    track.request_keyframe()
    assert latch.due() and not latch.due() and latch.requested == 2
    unit = EncodedVideo("chest", 0, 1_000, 1_000, True, annexb(SPS, PPS, IDR))
    assert track.encode(unit) == [EncodedPacket("chest", 1_000, 1_000, 33_333_333, True, unit.data, 1)]
    with pytest.raises(MediaError, match="does not follow"):
        track.encode(EncodedVideo("chest", 1, 1_000, 1_000, False, annexb(SLICE)))
    assert track.flush() == [] and track.get_status()["keyframes_requested"] == 2


# ---- the driver over the fake library -----------------------------------------------------------


def camera(tmp_path: Path, library: FakePicamera2Library, with_encoder: bool = True) -> Any:
    driver = fake_driver(library)
    return driver(name="chest", clock=SystemClock(), width=96, height=64, fps=60.0,
                  sysfs_root=v4l2_sysfs(tmp_path / "sys", with_encoder))


def test_the_probe_finds_the_header_and_a_requested_keyframe(tmp_path: Path) -> None:
    library = FakePicamera2Library()
    cam = camera(tmp_path, library)
    assert H264_ENCODER in cam.capabilities
    answer = cam.probe_h264(SETTINGS)
    assert answer.header is not None and answer.header.startswith(START_CODE + b"\x67")
    assert answer.reason == "picamera2 H264Encoder opened at 96x64 at 60 fps, requested keyframes honoured"
    assert library.opened and all(c.closed for c in library.opened)  # closed again for the worker to open


@pytest.mark.parametrize(("knobs", "says"), [
    ({"honour_keyframe_requests": False}, "a requested keyframe (force_key_frame) did not come within 4 frames"),
    ({"in_band_headers": False}, "the first unit is not a keyframe with SPS/PPS in-band"),
    ({"cameras": 0}, "does not start: chest: starting camera 0: camera 0 not found"),
])
def test_the_probe_refuses_with_the_reason(tmp_path: Path, knobs: dict[str, Any], says: str) -> None:
    answer = camera(tmp_path, FakePicamera2Library(**knobs)).probe_h264(SETTINGS)
    assert answer.header is None and says in answer.reason


def test_a_board_without_the_m2m_encoder_has_no_camera_encoder(tmp_path: Path) -> None:
    cam = camera(tmp_path, FakePicamera2Library(), with_encoder=False)
    assert H264_ENCODER not in cam.capabilities
    assert "which this board lacks (a Pi 5 has no H.264 encoder)" in cam.probe_h264(SETTINGS).reason
    with pytest.raises(SensorError, match="bcm2835-codec-encode"):
        cam.encode_with(SETTINGS, lambda: False)


# ---- the unit: selection, the track, the packets muxed and decoded -----------------------------

CONFIG = """[device]
id = "u"
[cameras.chest]
driver = "picamera2"
options = {{ width = 96, height = 64, fps = 60.0, sysfs_root = "{sysfs}" }}
encoder = "{encoder}"
[thermal]
enabled = false
[microphone]
enabled = false
[gnss]
enabled = false
[inputs]
enabled = false
[indicators]
enabled = false
[power]
enabled = false
"""


class NoCodecs:
    """The board's codec probe: in these tests libx264 only."""

    def __call__(self, codec: str, request: EncoderRequest) -> ProbeResult:
        if codec == "libx264":
            return ProbeResult(codec, True, "opened")
        return ProbeResult(codec, False, "no V4L2 M2M encoder on this board")


def unit_config(tmp_path: Path, encoder: str = "auto", extra: str = "") -> Any:
    return parse_config(CONFIG.format(sysfs=v4l2_sysfs(tmp_path / "sys"), encoder=encoder) + extra)


def registry(library: FakePicamera2Library) -> Registry:
    reg = Registry()
    reg.register("camera", "picamera2")(fake_driver(library))
    reg.register("clock", "system")(SystemClock)
    return reg


def test_auto_takes_the_cameras_encoder_and_its_packets_decode(tmp_path: Path) -> None:
    library = FakePicamera2Library()
    sensors = build_sensors(unit_config(tmp_path), SystemClock(), sim=False, registry=registry(library),
                            probe=NoCodecs())
    track = sensors.encoders["chest"]
    assert isinstance(track, CameraH264Track) and track.spec.extradata
    cam = sensors.devices["chest"]
    packets: list[EncodedPacket] = []
    cam.open()
    try:
        while len(packets) < 40:
            if len(packets) == 20:
                sensors.request_keyframes()  # as the recorder does at record start
                asked_at, backlog = len(packets), cam.get_status()["encoding"]["backlog"]
            unit = cam.read(2.0)
            assert isinstance(unit, EncodedVideo), "the camera hands over encoded units, not frames"
            packets += track.encode(unit)
    finally:
        cam.close()
    keys = [i for i, p in enumerate(packets) if p.keyframe]
    assert keys[0] == 0 and any(asked_at <= k < asked_at + backlog + 4 for k in keys), (keys, backlog)
    steps = {round((b.pts_ns - a.pts_ns) / 1e6) for a, b in zip(packets, packets[1:], strict=False)}
    assert min(steps) > 0  # the sensor's spacing, on the host clock
    assert cam.get_status()["encoding"]["clock"] == "sensor"
    sink = io.BytesIO()
    with SegmentMuxer(sink, [track.spec], start_ns=packets[0].pts_ns) as muxer:
        for packet in packets:
            muxer.write(packet)
    sink.seek(0)
    with av.open(sink) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == len(packets) and (frames[0].width, frames[0].height) == (96, 64)


def test_a_replacement_device_encodes_too_and_shares_the_keyframe_latch(tmp_path: Path) -> None:
    library = FakePicamera2Library(sensor_clock="own")
    sensors = build_sensors(unit_config(tmp_path, "picamera2"), SystemClock(), sim=False,
                            registry=registry(library), probe=NoCodecs())
    fresh = sensors.factories["chest"]()  # what the main loop makes when a sensor thread hangs
    sensors.request_keyframes()
    fresh.open()
    try:
        units = [fresh.read(2.0) for _ in range(3)]
    finally:
        fresh.close()
    assert all(isinstance(u, EncodedVideo) for u in units)
    assert fresh.get_status()["encoding"]["keyframes_forced"] == 1
    assert fresh.get_status()["encoding"]["clock"] == "anchored"  # the fake's own clock, anchored at arrival


def test_a_camera_whose_frames_others_need_keeps_a_software_encoder(tmp_path: Path) -> None:
    library = FakePicamera2Library()
    config = unit_config(tmp_path, extra="[background]\nenabled = true\n")
    rows = list_encoders(config, registry=registry(library), probe=NoCodecs())
    assert rows[0].codec == "libx264"
    assert ("picamera2: the camera's frames are needed by the background recording (background.camera), and its "
            "own encoder never hands them to Python") in rows[0].reason
    with pytest.raises(ConfigError) as info:
        build_sensors(unit_config(tmp_path, "picamera2", "[background]\nenabled = true\n"), SystemClock(),
                      sim=False, registry=registry(library), probe=NoCodecs())
    assert str(info.value).startswith("cameras.chest.encoder: picamera2 (configured) is unusable: the camera's frames")
    assert 'set cameras.chest.encoder = "auto" to record with libx264 on this board' in str(info.value)


def test_a_simulated_camera_has_no_encoder_of_its_own(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"picamera2 \\(configured\\) is unusable: {NOT_OWN_ENCODER}"):
        config = parse_config('[device]\nid = "u"\n[cameras.chest]\nencoder = "picamera2"\n')
        build_sensors(config, SystemClock(), sim=True, probe=NoCodecs())
