"""The hardware H.264 encoder (V4L2 M2M) on a real board, staged like the drivers' tests.

Marked ``hardware``; where the probe finds no usable ``h264_v4l2m2m`` (no V4L2 encoder device,
FFmpeg without it, no global header, a requested keyframe ignored) each stage skips with the
probe's reason, so CI without the hardware skips them all. Run on a Raspberry Pi 4 with
``pytest -m hardware tests/hardware/test_encoders_on_hardware.py -v``.
"""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest

from agent.media.encoder_probe import CodecProbe, v4l2_devices
from agent.media.encoder_select import EncoderRequest, select_encoder
from agent.media.encoders import VideoEncoder
from agent.media.muxer import SegmentMuxer
from hal.camera import VideoFrame

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
