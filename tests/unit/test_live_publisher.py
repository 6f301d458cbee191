"""The live publisher's seams into aiortc and its own encoder: keyframes, bitrate, time stamps."""

from __future__ import annotations

import asyncio

import av
import numpy as np
from aiortc import RTCRtpSender
from aiortc.rtp import RTCP_PSFB_APP, RTCP_PSFB_PLI, RtcpPsfbPacket, pack_remb_fci

from agent.live.encoder import RTP_CLOCK_HZ, LiveEncoder
from agent.live.publisher import _tap_rtcp
from drivers import sim_timecode
from drivers.sim_camera import SimCamera
from hal.camera import VideoFrame
from tests.fakes import FakeClock


class Sender:
    """Stands in for aiortc's RTCRtpSender: records what reaches its RTCP handler."""

    def __init__(self) -> None:
        self.seen: list[object] = []

    async def _handle_rtcp_packet(self, packet: object) -> None:
        self.seen.append(packet)


def test_aiortc_still_has_the_rtcp_handler_the_publisher_wraps() -> None:
    assert asyncio.iscoroutinefunction(RTCRtpSender._handle_rtcp_packet)


def test_keyframe_requests_and_remb_reach_the_live_encoder_and_aiortc_still_sees_them() -> None:
    sender, heard = Sender(), []
    _tap_rtcp(sender, lambda kind, value: heard.append((kind, value)))
    pli = RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1, media_ssrc=2)
    remb = RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=1, media_ssrc=0, fci=pack_remb_fci(420_000, [2]))
    asyncio.run(sender._handle_rtcp_packet(pli))
    asyncio.run(sender._handle_rtcp_packet(remb))
    assert heard == [("keyframe", 0), ("remb", 420_000)]
    assert sender.seen == [pli, remb]


def _frames(n: int, fps: float = 15.0) -> list[VideoFrame]:
    cam = SimCamera(name="c", clock=FakeClock(), width=1280, height=720, timecode=True)
    period = round(1e9 / fps)
    return [VideoFrame("c", i, 5_000_000_000 + i * period, 0, 1280, 720, "yuv420p",
                       cam.render(i, 1_764_000_000_000_000_000 + i * period)) for i in range(n)]


def test_the_live_encoder_scales_keys_every_interval_and_on_request() -> None:
    enc = LiveEncoder(640, 360, 15.0, 500_000, keyframe_interval_s=1.0)
    keys, pts = [], []
    for frame in _frames(40):
        if frame.index == 20:
            enc.request_keyframe()
        for p in enc.encode(frame):
            pts.append(p.pts)
            if p.is_keyframe:
                keys.append(frame.index)
    assert keys == [0, 15, 20, 35]
    assert pts[1] - pts[0] == RTP_CLOCK_HZ // 15  # the capture's spacing on the RTP clock
    dec = av.CodecContext.create("h264", "r")
    enc2 = LiveEncoder(640, 360, 15.0, 500_000, 1.0)
    got = [out for frame in _frames(3) for p in enc2.encode(frame) for out in dec.decode(p)]
    assert (got[0].width, got[0].height) == (640, 360)
    ms, index = sim_timecode.read(np.ascontiguousarray(got[2].to_ndarray(format="gray")))  # type: ignore[misc]
    assert index == 2 and ms == (1_764_000_000_000_000_000 + 2 * round(1e9 / 15)) // 1_000_000


def test_a_new_bitrate_reopens_the_codec_only_past_ten_percent() -> None:
    enc = LiveEncoder(640, 360, 15.0, 500_000, 1.0)
    frames = _frames(6)
    enc.encode(frames[0])
    enc.bitrate_bps = 540_000
    enc.encode(frames[1])
    assert enc.reopened == 0
    enc.bitrate_bps = 300_000
    packets = enc.encode(frames[2])
    assert enc.reopened == 1 and packets[0].is_keyframe
