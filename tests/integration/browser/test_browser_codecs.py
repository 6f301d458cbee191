"""The browser receives the codec the unit sends for live view (also checked at CI set-up by
scripts/check-browser-codecs): H.264 constrained baseline over WebRTC, in Debian's chromium."""

from __future__ import annotations

from typing import Any

from tests.browser_util import receives_live_h264, webrtc_video_codecs


def test_chromium_receives_the_units_live_codec_over_webrtc(page: Any) -> None:
    page.goto("about:blank")
    codecs = webrtc_video_codecs(page)
    assert receives_live_h264(codecs), codecs


def test_the_codec_check_wants_constrained_baseline_in_packetization_mode_1() -> None:
    baseline = ("video/H264", "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f")
    assert receives_live_h264([baseline])
    assert not receives_live_h264([("video/H264", "packetization-mode=1;profile-level-id=640032")])  # high
    assert not receives_live_h264([("video/H264", "packetization-mode=0;profile-level-id=42e01f")])
    assert not receives_live_h264([("video/VP8", ""), ("video/rtx", "apt=96")])
