"""The simulated camera's machine-readable time code survives scaling and lossy H.264."""

from __future__ import annotations

import av
import cv2
import numpy as np

from drivers import sim_timecode
from drivers.sim_camera import SimCamera
from tests.fakes import FakeClock


def test_the_strip_reads_back_what_was_burned() -> None:
    cam = SimCamera(name="c", clock=FakeClock(), width=640, height=360, timecode=True)
    frame = cam.render(1234, 1_764_000_000_123_000_000)
    assert sim_timecode.read(frame[:360]) == (1_764_000_000_123 % (1 << 48), 1234 % 256)


def test_a_picture_without_the_strip_reads_as_none() -> None:
    cam = SimCamera(name="c", clock=FakeClock(), width=640, height=360)
    assert sim_timecode.read(cam.render(7, 1_764_000_000_000_000_000)[:360]) is None


def test_scaled_to_a_third_and_coded_at_300_kbits_the_strip_still_reads() -> None:
    cam = SimCamera(name="c", clock=FakeClock(), width=1920, height=1080, timecode=True, scene="street")
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt, enc.bit_rate = 640, 360, "yuv420p", 300_000
    enc.framerate = 15
    enc.options = {"preset": "ultrafast", "tune": "zerolatency"}
    dec = av.CodecContext.create("h264", "r")
    read = []
    for i in range(15):
        utc_ms = 1_764_000_000_000 + i * 66
        big = cam.render(i, utc_ms * 1_000_000)
        small = cv2.resize(cv2.cvtColor(big, cv2.COLOR_YUV2BGR_I420), (640, 360), interpolation=cv2.INTER_AREA)
        vf = av.VideoFrame.from_ndarray(small, format="bgr24").reformat(format="yuv420p")
        vf.pts = i
        for packet in enc.encode(vf):
            for out in dec.decode(packet):
                gray = out.to_ndarray(format="gray")
                read.append(sim_timecode.read(np.ascontiguousarray(gray)))
    assert read, "the encoder gave nothing"
    decoded = [r for r in read if r is not None]
    assert len(decoded) == len(read)
    assert [ms for ms, _ in decoded] == sorted(ms for ms, _ in decoded)
    assert decoded[0] == (1_764_000_000_000, 0)
    assert decoded[-1] == (1_764_000_000_000 + (len(read) - 1) * 66, len(read) - 1)
