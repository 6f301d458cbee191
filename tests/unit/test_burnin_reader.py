"""The simulated camera's burned-in clock reads back from a decoded H.264 frame to the millisecond
(what the browser playback test relies on), whichever time in the search window the frame shows."""

from __future__ import annotations

import io

import av
import numpy as np

from tests.burnin_util import camera, read_burned_time_ms

UTC_NS = 1_796_292_123_456_000_000


def _through_h264(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as c:
        st = c.add_stream("libx264", rate=10)
        st.width, st.height, st.pix_fmt = width, height, "yuv420p"
        st.options = {"crf": "32", "preset": "ultrafast", "threads": "1"}
        for p in st.encode(av.VideoFrame.from_ndarray(frame, format="yuv420p")):
            c.mux(p)
        for p in st.encode():
            c.mux(p)
    with av.open(io.BytesIO(buf.getvalue())) as c:
        return next(c.decode(video=0)).to_ndarray(format="yuv420p")[:height]


def test_the_burned_clock_reads_back_after_h264() -> None:
    cam = camera(640, 360)
    x, y, w, h = cam.label_box
    luma = _through_h264(cam.render(123, UTC_NS), 640, 360)
    found, err = read_burned_time_ms(cam, luma[y : y + h, x : x + w], UTC_NS // 1_000_000 + 900)
    assert found == UTC_NS // 1_000_000 and err < 10
    later = _through_h264(cam.render(135, UTC_NS + 1_234_000_000), 640, 360)[y : y + h, x : x + w]
    assert read_burned_time_ms(cam, later, UTC_NS // 1_000_000)[0] == UTC_NS // 1_000_000 + 1234
