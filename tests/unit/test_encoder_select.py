"""Choosing each camera's H.264 encoder: the pure selection over hand-written probe answers, the
real probe on this machine's FFmpeg, and the unit and ``bodycam drivers`` built on them."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import av
import numpy as np
import pytest

from agent import drivers_cmd
from agent.config import ConfigError, parse_config
from agent.media.encoder_probe import CodecProbe, keyframe_test, v4l2_devices
from agent.media.encoder_select import EncoderRequest, ProbeResult, select_encoder
from agent.media.encoders import VideoEncoder
from agent.media.packets import EncodedPacket, MediaError
from agent.unit import NOT_OWN_ENCODER, EncoderListing, build_sensors, list_encoders
from hal.camera import VideoFrame
from tests.fakes import FakeClock

SMALL = EncoderRequest(64, 48, 30, 1, "yuv420p", 200_000, 30, 1)
NO_DEVICE = "no V4L2 M2M encoder on this board"
NOT_OWN = f"{NOT_OWN_ENCODER} (the picamera2 driver has, on a board with the V4L2 M2M encoder)"


class ScriptedProbe:
    """Answers from a table, and records what it was asked, so a test sees what selection tried."""

    def __init__(self, answers: dict[str, tuple[bool, str]]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, EncoderRequest | None]] = []

    def __call__(self, codec: str, request: EncoderRequest | None = None) -> ProbeResult:
        self.asked.append((codec, request))
        usable, reason = self.answers[codec]
        return ProbeResult(codec, usable, reason)


def test_auto_takes_the_hardware_encoder_where_it_works() -> None:
    probe = ScriptedProbe({"picamera2": (False, NOT_OWN), "h264_v4l2m2m": (True, "opened at 1920x1080 yuv420p 30 fps"),
                           "libx264": (True, "ok")})
    chosen = select_encoder("auto", probe)
    assert chosen.codec == "h264_v4l2m2m" and chosen.usable
    assert chosen.reason == "h264_v4l2m2m: opened at 1920x1080 yuv420p 30 fps"
    assert [codec for codec, _ in probe.asked] == ["picamera2", "h264_v4l2m2m"]  # libx264 never opened for nothing


def test_auto_prefers_the_cameras_own_encoder() -> None:
    probe = ScriptedProbe({"picamera2": (True, "picamera2 H264Encoder opened"), "h264_v4l2m2m": (True, "opened"),
                           "libx264": (True, "ok")})
    chosen = select_encoder("auto", probe)
    assert chosen.codec == "picamera2" and chosen.reason == "picamera2: picamera2 H264Encoder opened"
    assert [codec for codec, _ in probe.asked] == ["picamera2"]


def test_auto_falls_back_to_libx264_and_says_why() -> None:
    probe = ScriptedProbe({"picamera2": (False, NOT_OWN), "h264_v4l2m2m": (False, NO_DEVICE),
                           "libx264": (True, "opened at 64x48")})
    chosen = select_encoder("auto", probe)
    assert chosen.codec == "libx264"
    assert chosen.reason == f"libx264: opened at 64x48 (passed over picamera2: {NOT_OWN}; h264_v4l2m2m: {NO_DEVICE})"
    assert [r.codec for r in chosen.tried] == ["picamera2", "h264_v4l2m2m", "libx264"]


def test_auto_with_nothing_usable_names_every_reason() -> None:
    probe = ScriptedProbe({"picamera2": (False, NOT_OWN), "h264_v4l2m2m": (False, "keyframe ignored"),
                           "libx264": (False, "not in this build")})
    chosen = select_encoder("auto", probe)
    assert chosen.codec is None and not chosen.usable
    assert "h264_v4l2m2m: keyframe ignored" in chosen.reason and "libx264: not in this build" in chosen.reason


@pytest.mark.parametrize("codec", ["libx264", "h264_v4l2m2m", "picamera2"])
def test_an_explicit_encoder_is_never_swapped_for_another(codec: str) -> None:
    others = [c for c in ("libx264", "h264_v4l2m2m", "picamera2") if c != codec]
    probe = ScriptedProbe({codec: (False, "refused: a requested keyframe did not come out as one"),
                           **{other: (True, "fine") for other in others}})
    chosen = select_encoder(codec, probe)
    assert chosen.codec is None
    assert chosen.reason == f"{codec} (configured) is unusable: refused: a requested keyframe did not come out as one"
    assert [c for c, _ in probe.asked] == [codec]
    probe.answers[codec] = (True, "fine")
    assert select_encoder(codec, probe).codec == codec


def test_an_unknown_choice_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="'x265' is not one of auto, libx264, picamera2, h264_v4l2m2m"):
        select_encoder("x265", ScriptedProbe({}))


# ---- the real probe, on this machine's FFmpeg ----------------------------------------------------


def test_libx264_honours_a_requested_keyframe_here() -> None:
    assert keyframe_test("libx264", SMALL) == ""


def test_the_probe_opens_libx264_and_caches_its_answer(tmp_path: Path) -> None:
    probe = CodecProbe(dev_dir=tmp_path)
    first = probe("libx264", SMALL)
    assert first.usable and first.reason.startswith("opened at 64x48 yuv420p 30 fps, 1 thread(s)")
    assert probe("libx264", SMALL) is first
    assert probe("libx264", EncoderRequest(64, 48, 30, 1, "yuv420p", 200_000, 30, 2)) is not first


def test_no_v4l2_device_means_no_hardware_encoder(tmp_path: Path) -> None:
    (tmp_path / "null").touch()
    result = CodecProbe(dev_dir=tmp_path)("h264_v4l2m2m", SMALL)
    assert not result.usable and result.reason == f"{NO_DEVICE} (no {tmp_path}/video*)"


def test_a_v4l2_node_that_is_no_encoder_is_refused_with_ffmpegs_reason(tmp_path: Path) -> None:
    # Plain files named like device nodes: FFmpeg's M2M wrapper scans /dev itself and finds no
    # encoder, so the probe must report the open failure rather than trust the names.
    for name in ("video10", "video2"):
        (tmp_path / name).touch()
    assert v4l2_devices(tmp_path) == [str(tmp_path / "video2"), str(tmp_path / "video10")]
    result = CodecProbe(dev_dir=tmp_path)("h264_v4l2m2m", SMALL)
    assert not result.usable
    assert result.reason.startswith("does not open at 64x48 yuv420p 30 fps (V4L2 devices: ")


def test_a_codec_without_a_header_is_refused_with_the_reason(tmp_path: Path) -> None:
    # rawvideo never has SPS/PPS: the same refusal a V4L2 encoder that never gives them would get.
    with pytest.raises(MediaError, match="rawvideo gave no SPS/PPS header after 16 frames"):
        VideoEncoder("chest", 64, 48, 30, codec="rawvideo")
    (tmp_path / "video0").touch()
    result = CodecProbe(dev_dir=tmp_path)("rawvideo", SMALL)
    assert result == ProbeResult("rawvideo", False, f"does not open at 64x48 yuv420p 30 fps (V4L2 devices: "
                                 f"{tmp_path}/video0): track 'probe': rawvideo gave no SPS/PPS header after 16 frames")


def test_priming_drops_its_packets_and_starts_the_camera_on_a_keyframe() -> None:
    # libx264 has its header at once; priming it anyway exercises what a V4L2 encoder goes through.
    encoder = VideoEncoder("chest", 64, 48, 30, gop_frames=100)
    ctx = encoder._ctx
    assert isinstance(ctx, av.VideoCodecContext)
    encoder._prime(ctx)
    packets: list[EncodedPacket] = []
    for index in range(3):
        packets += encoder.encode(VideoFrame("chest", index, 10 + index, 10 + index, 64, 48, "yuv420p",
                                             np.zeros((72, 64), dtype=np.uint8)))
    packets += encoder.flush()
    assert [(p.pts_ns, p.keyframe) for p in packets] == [(10, True), (11, False), (12, False)]
    assert encoder.spec.extradata == ctx.extradata


# ---- the unit and `bodycam drivers` ----------------------------------------------------------------

CONFIG = '[device]\nid = "u"\n[cameras.chest]\noptions = { width = 64, height = 48 }\n'


def test_the_unit_encodes_with_the_selected_codec_and_the_same_packets() -> None:
    probe = ScriptedProbe({"h264_v4l2m2m": (False, NO_DEVICE), "libx264": (True, "opened")})
    config = parse_config(CONFIG + "encoder_threads = 2\n")
    sensors = build_sensors(config, FakeClock(), sim=False, probe=probe)
    asked = {codec: request for codec, request in probe.asked}
    assert asked["libx264"] == EncoderRequest(64, 48, 30, 1, "yuv420p", 4_000_000, 30, 2)
    encoder = sensors.encoders["chest"]
    assert isinstance(encoder, VideoEncoder) and encoder.spec.codec == "h264" and encoder.spec.extradata
    camera = sensors.devices["chest"]
    camera.open()
    try:
        packets: list[EncodedPacket] = []
        for n in range(4):
            if n == 2:
                sensors.request_keyframes()
            frame = camera.read(1.0)
            assert frame is not None
            packets += encoder.encode(frame)
    finally:
        camera.close()
    assert all(isinstance(p, EncodedPacket) and p.track == "chest" for p in packets)
    assert [p.keyframe for p in packets] == [True, False, True, False]
    assert encoder.get_status()["encoder"] == "libx264"


def test_an_unusable_configured_encoder_stops_the_unit_naming_the_option() -> None:
    probe = ScriptedProbe({"h264_v4l2m2m": (False, NO_DEVICE), "libx264": (True, "opened")})
    config = parse_config(CONFIG + 'encoder = "h264_v4l2m2m"\n')
    with pytest.raises(ConfigError) as info:
        build_sensors(config, FakeClock(), sim=False, probe=probe)
    assert info.value.key == "cameras.chest.encoder"
    assert str(info.value) == (f"cameras.chest.encoder: h264_v4l2m2m (configured) is unusable: {NO_DEVICE}; set "
                               'cameras.chest.encoder = "auto" to record with libx264 on this board, or fix what the '
                               "probe found (`bodycam drivers` shows every encoder's answer)")
    assert "\n" not in str(info.value)


def test_a_refusal_says_when_auto_would_not_help_either() -> None:
    probe = ScriptedProbe({"h264_v4l2m2m": (False, NO_DEVICE), "libx264": (False, "not in this FFmpeg build")})
    with pytest.raises(ConfigError) as info:
        build_sensors(parse_config(CONFIG + 'encoder = "h264_v4l2m2m"\n'), FakeClock(), sim=False, probe=probe)
    assert '"auto" finds no usable encoder here either (no H.264 encoder is usable: ' in str(info.value)
    assert "libx264: not in this FFmpeg build" in str(info.value)
    with pytest.raises(ConfigError) as info:
        build_sensors(parse_config(CONFIG), FakeClock(), sim=False, probe=probe)
    assert str(info.value).startswith("cameras.chest.encoder: no H.264 encoder is usable: ")
    assert str(info.value).endswith("this board cannot record H.264 as configured: check the camera's size and rate "
                                    "(`bodycam drivers` shows every encoder's answer)")


def test_list_encoders_shows_each_enabled_camera() -> None:
    probe = ScriptedProbe({"h264_v4l2m2m": (False, NO_DEVICE), "libx264": (True, "opened")})
    config = parse_config(CONFIG + '[cameras.spare]\nenabled = false\n[cameras.helmet]\nencoder = "libx264"\n')
    rows = list_encoders(config, probe=probe)
    assert rows == [
        EncoderListing("chest", "auto", "libx264",
                       f"libx264: opened (passed over picamera2: {NOT_OWN}; h264_v4l2m2m: {NO_DEVICE})"),
        EncoderListing("helmet", "libx264", "libx264", "libx264: opened"),
    ]


def test_the_drivers_command_prints_each_cameras_encoder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    drivers_cmd.render_encoders([EncoderListing("chest", "auto", None, "nothing\x1b[2J usable")], out)
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["CAMERA", "ENCODER", "WHY"]
    assert lines[1].split()[:2] == ["chest", "none"] and "\x1b" not in lines[1] and "\\x1b[2J" in lines[1]
    (tmp_path / "bodycam.toml").write_text(CONFIG)
    parser = argparse.ArgumentParser()
    drivers_cmd.add_parser(parser.add_subparsers())
    assert drivers_cmd.run(parser.parse_args(["drivers", "--kind", "camera", "--data-dir", str(tmp_path)])) == 0
    text = capsys.readouterr().out
    assert "\nCAMERA " in text and "\nchest   libx264  libx264: opened at 64x48 yuv420p 30 fps" in text
    assert drivers_cmd.run(parser.parse_args(["drivers", "--json", "--config", str(tmp_path / "bodycam.toml")])) == 0
    rows = [r for r in json.loads(capsys.readouterr().out) if r["kind"] == "encoder"]
    assert [(r["name"], r["summary"], r["choice"]) for r in rows] == [("chest", "libx264", "auto")]
    (tmp_path / "bad.toml").write_text(CONFIG + 'encoder = "x265"\n')
    assert drivers_cmd.run(parser.parse_args(["drivers", "--config", str(tmp_path / "bad.toml")])) == 2
    assert "cameras.chest.encoder: 'x265' is not one of" in capsys.readouterr().err
