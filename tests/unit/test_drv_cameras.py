"""Camera drivers: the V4L2/UVC read path fed from a real video file, the Jetson pipeline string,
and the Pi camera's encoder choice and frame handling without a camera."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from drivers.picamera2_camera import Picamera2Camera, choose_h264_encoder, video4linux_names
from drivers.v4l2_camera import V4l2Camera, bgr_to_yuv420p, nvargus_pipeline
from hal.common import SensorError
from tests.fakes import FakeClock


def write_clip(path: Path, frames: int = 5, width: int = 64, height: int = 48) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (width, height))
    assert writer.isOpened()
    for i in range(frames):
        image = np.zeros((height, width, 3), dtype=np.uint8)
        image[:, :, 2] = 40 * i  # red ramps up frame by frame
        image[: height // 2, :, 1] = 200
        writer.write(image)
    writer.release()


def test_v4l2_camera_reads_a_video_file_through_the_same_path(tmp_path: Path) -> None:
    clip = tmp_path / "clip.avi"
    write_clip(clip)
    cam = V4l2Camera(name="chest", clock=FakeClock(), device=str(clip), backend="file", width=64, height=48, fps=10)
    assert (cam.format.width, cam.format.height, cam.format.fps, cam.format.pixel_format) == (64, 48, 10.0, "yuv420p")
    with cam:
        frames = [cam.read(1.0) for _ in range(5)]
        with pytest.raises(SensorError, match="end of the file"):
            cam.read(1.0)
    assert [f.index for f in frames if f] == [0, 1, 2, 3, 4]
    first = frames[0]
    assert first is not None and first.data.shape == (72, 64) and first.data.dtype == np.uint8
    v_means = [float(f.data[48 + 12 :, :].mean()) for f in frames if f]  # the V plane follows red
    assert v_means == sorted(v_means) and v_means[-1] - v_means[0] > 20
    assert cam.get_status()["frames"] == 5


def test_frames_of_another_size_are_scaled_and_grey_is_accepted() -> None:
    grey = np.full((100, 200), 128, dtype=np.uint8)
    yuv = bgr_to_yuv420p(grey, 64, 48)
    assert yuv.shape == (72, 64) and abs(int(yuv[0, 0]) - 128) <= 3
    assert np.all(yuv[48:] == 128), "grey has neutral chroma"


def test_jetson_csi_pipeline_string() -> None:
    p = nvargus_pipeline(1, 1920, 1080, 30)
    assert p.startswith("nvarguscamerasrc sensor-id=1 ! ") and "framerate=30/1" in p
    assert p.endswith("appsink drop=false max-buffers=4")


def test_camera_options_are_checked() -> None:
    with pytest.raises(ValueError, match="backend"):
        V4l2Camera(name="c", clock=FakeClock(), backend="dshow")
    with pytest.raises(ValueError, match="even"):
        V4l2Camera(name="c", clock=FakeClock(), width=641)


def test_h264_encoder_is_chosen_by_what_the_board_has(tmp_path: Path) -> None:
    for dev, name in (("video10", "bcm2835-codec-decode"), ("video11", "bcm2835-codec-encode"), ("video0", "unicam")):
        (tmp_path / dev).mkdir()
        (tmp_path / dev / "name").write_text(name + "\n")
    names = video4linux_names(tmp_path)
    assert choose_h264_encoder(names) == ("v4l2m2m", "/dev/video11")  # a Pi 4
    assert choose_h264_encoder({"/dev/video0": "rp1-cfe", "/dev/video19": "pispbe"}) == ("libav", None)  # a Pi 5
    pi4 = Picamera2Camera(name="chest", clock=FakeClock(), sysfs_root=str(tmp_path))
    assert pi4.capabilities == {"h264-hw", "h264-encoder"} and pi4.h264_encoder == ("v4l2m2m", "/dev/video11")
    pi5 = Picamera2Camera(name="chest", clock=FakeClock(), sysfs_root=str(tmp_path / "none"))
    assert pi5.capabilities == frozenset()


def test_picamera2_frames_keep_the_sensor_timestamp_and_count_skipped_sequences() -> None:
    cam = Picamera2Camera(name="chest", clock=FakeClock(), width=64, height=64)
    padded = np.zeros((96, 80), dtype=np.uint8)  # libcamera pads rows to the stride
    f0 = cam.frame_from(padded, {"SensorTimestamp": 123_456_789_000, "FrameSequence": 10}, 5)
    f1 = cam.frame_from(padded, {"SensorTimestamp": 123_490_000_000, "FrameSequence": 13}, 6)
    assert f0.sensor_ns == 123_456_789_000 and f0.data.shape == (96, 64)
    assert (f1.index, f1.dropped_before) == (3, 2)
    assert cam.get_status()["dropped"] == 2
    with pytest.raises(SensorError, match="read while closed"):
        cam.read(0.1)
