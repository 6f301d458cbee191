"""The hardware H.264 encoders on a real board, staged like the drivers' tests: FFmpeg's V4L2 M2M
wrapper fed frames, and picamera2's own encoder fed by the camera (no frame through Python).

Marked ``hardware``; where the probe finds an encoder unusable (no V4L2 encoder device, FFmpeg
without it, picamera2 or the camera missing, no header, a requested keyframe ignored) each stage
skips with the probe's reason, so CI without the hardware skips them all. Run on a Raspberry Pi 4
with a camera with ``pytest -m hardware tests/hardware/test_encoders_on_hardware.py -v``.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from agent.media.camera_h264 import CameraH264Track, KeyframeLatch
from agent.media.encoder_probe import CodecProbe, v4l2_devices
from agent.media.encoder_select import EncoderRequest, select_encoder
from agent.media.encoders import VideoEncoder
from agent.media.muxer import SegmentMuxer
from drivers.registry import load_all
from drivers.system_clock import SystemClock
from hal.camera import EncodedVideo, H264Settings, VideoFrame

pytestmark = pytest.mark.hardware

CODEC = "h264_v4l2m2m"
FULL_HD = EncoderRequest(1920, 1080, 30, 1, "yuv420p", 4_000_000, 30, 1)
PERIOD_NS = 33_333_333


def _usable(request: EncoderRequest = FULL_HD) -> None:
    if not v4l2_devices(Path("/dev")):
        pytest.skip(f"{CODEC}: no /dev/video* on this machine")
    result = CodecProbe()(CODEC, request)
    if not result.usable:
        pytest.skip(f"{CODEC}: {result.reason}")


def _frame(index: int, request: EncoderRequest = FULL_HD) -> VideoFrame:
    rng = np.random.default_rng(index)  # texture, so the encoder has something to do
    planes = rng.integers(0, 256, (request.height * 3 // 2, request.width), dtype=np.uint8)
    mono_ns = (index + 1) * PERIOD_NS
    return VideoFrame("hw", index, mono_ns, mono_ns, request.width, request.height, "yuv420p", planes)


def test_stage1_auto_selects_the_hardware_encoder() -> None:
    _usable()
    chosen = select_encoder("auto", lambda codec: CodecProbe()(codec, FULL_HD))
    assert chosen.codec == CODEC, chosen.reason


def test_stage2_open_gives_a_global_header_and_closes() -> None:
    _usable()
    with VideoEncoder("hw", 1920, 1080, 30, codec=CODEC) as encoder:
        assert encoder.spec.codec == "h264" and encoder.spec.extradata
    assert encoder.get_status()["open"] is False


def test_stage3_keyframes_at_the_gop_and_on_request() -> None:
    _usable()
    with VideoEncoder("hw", 1920, 1080, 30, gop_frames=30, codec=CODEC) as encoder:
        packets = []
        for index in range(90):
            if index == 45:
                encoder.request_keyframe()
            packets += encoder.encode(_frame(index))
        packets += encoder.flush()
    assert len(packets) == 90
    keyframes = {round(p.pts_ns / PERIOD_NS) - 1 for p in packets if p.keyframe}
    assert {0, 30, 45} <= keyframes, sorted(keyframes)


def test_stage4_a_hardware_segment_muxes_and_decodes() -> None:
    _usable()
    sink = io.BytesIO()
    encoder = VideoEncoder("hw", 1920, 1080, 30, codec=CODEC)
    with encoder, SegmentMuxer(sink, [encoder.spec], start_ns=_frame(0).mono_ns) as muxer:
        for index in range(60):
            for packet in encoder.encode(_frame(index)):
                muxer.write(packet)
        for packet in encoder.flush():
            muxer.write(packet)
    sink.seek(0)
    with av.open(sink) as container:
        decoded = sum(1 for _ in container.decode(video=0))
    assert decoded == 60


# ---- picamera2's own encoder ----------------------------------------------------------------

SETTINGS = H264Settings(4_000_000, 30)


def _camera() -> tuple[Any, bytes]:
    info = load_all().get("camera", "picamera2")
    availability = info.probe()
    if not availability.usable:
        pytest.skip(f"camera/picamera2: {availability.reason}")
    camera = load_all().create("camera", "picamera2", name="hw", clock=SystemClock())
    answer = camera.probe_h264(SETTINGS)
    if answer.header is None:
        pytest.skip(f"picamera2 encoder: {answer.reason}")
    return camera, answer.header


def test_stage5_picamera2_probe_gives_a_header_and_honours_a_keyframe_request() -> None:
    camera, header = _camera()
    assert header.startswith(b"\x00\x00\x00\x01") and len(header) > 8


def test_stage6_picamera2_units_carry_sensor_time_and_keyframes_on_request() -> None:
    camera, header = _camera()
    latch = KeyframeLatch()
    camera.encode_with(SETTINGS, latch.due)
    track = CameraH264Track("hw", camera.format, header, SETTINGS, latch)
    packets = []
    camera.open()
    try:
        for index in range(90):
            if index == 45:
                track.request_keyframe()
            unit = camera.read(2.0)
            assert isinstance(unit, EncodedVideo)
            packets += track.encode(unit)
    finally:
        camera.close()
    keys = [i for i, p in enumerate(packets) if p.keyframe]
    assert keys[:2] == [0, 30] and any(45 <= k < 50 for k in keys), keys
    period_ms = {round((b.pts_ns - a.pts_ns) / 1e6) for a, b in zip(packets, packets[1:], strict=False)}
    assert period_ms <= {33, 34}, period_ms  # the sensor's 30 fps, not the arrival jitter
    assert camera.get_status()["encoding"]["clock"] == "sensor"


def test_stage7_a_picamera2_segment_muxes_and_decodes() -> None:
    camera, header = _camera()
    latch = KeyframeLatch()
    camera.encode_with(SETTINGS, latch.due)
    track = CameraH264Track("hw", camera.format, header, SETTINGS, latch)
    sink = io.BytesIO()
    camera.open()
    try:
        first = camera.read(2.0)
        assert isinstance(first, EncodedVideo) and first.keyframe
        with SegmentMuxer(sink, [track.spec], start_ns=first.mono_ns) as muxer:
            for packet in track.encode(first):
                muxer.write(packet)
            for _ in range(59):
                unit = camera.read(2.0)
                assert isinstance(unit, EncodedVideo)
                for packet in track.encode(unit):
                    muxer.write(packet)
    finally:
        camera.close()
    sink.seek(0)
    with av.open(sink) as container:
        decoded = sum(1 for _ in container.decode(video=0))
    assert decoded == 60
