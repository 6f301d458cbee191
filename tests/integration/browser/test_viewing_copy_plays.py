"""A court export's viewing copies play in Chromium: Debian's chromium (Playwright) loads the
camera copy and the colour-mapped thermal MP4 of a real recording in <video> elements from a
loopback HTTP server, decodes their pictures and plays through to the end."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.case_export_util import export_a_recording
from tests.playback_util import TH, TW, H, W

SECONDS = 3.0


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str]]:
    out, stem, _ = export_a_recording(tmp_path, SECONDS)
    (out / "play.html").write_text(
        '<!doctype html><html lang="en"><title>viewing copy</title>'
        f'<video id="camera" src="/{stem}.mp4" muted playsinline></video>'
        f'<video id="thermal" src="/{stem}.thermal.mp4" muted playsinline></video></html>')
    handler = functools.partial(_Quiet, directory=str(out))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", stem
    server.shutdown()
    server.server_close()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


def test_chromium_plays_the_camera_copy_and_the_thermal_picture(page: Any, served: tuple[str, str]) -> None:
    url, _ = served
    page.goto(url + "/play.html")
    for element, (width, height) in (("camera", (W, H)), ("thermal", (TW, TH))):
        page.wait_for_function(f"document.getElementById('{element}').readyState >= 2")
        got = page.evaluate(f"""async () => {{
            const v = document.getElementById('{element}');
            const ended = new Promise(resolve => v.addEventListener('ended', resolve));
            await v.play();
            await ended;
            const q = v.getVideoPlaybackQuality();
            return {{w: v.videoWidth, h: v.videoHeight, duration: v.duration, at: v.currentTime,
                     frames: q.totalVideoFrames, error: v.error && v.error.code}};
        }}""")
        assert got["error"] is None, got
        assert (got["w"], got["h"]) == (width, height), got
        assert got["duration"] == pytest.approx(SECONDS, abs=0.2) and got["at"] == pytest.approx(got["duration"]), got
        assert got["frames"] > 0, got
