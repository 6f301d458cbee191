"""The live rendition's own H.264 encoder: small, constrained baseline, keyframes at least every interval."""

from __future__ import annotations

import fractions
import threading
from typing import Any

import av
import numpy as np

from hal.camera import VideoFrame

RTP_CLOCK_HZ = 90_000  # RTP's video clock: packet time stamps are in this base


class LiveEncoderError(Exception):
    """The live encoder could not take a frame (the stream stops; the evidence never notices)."""


class LiveEncoder:
    """Scales camera frames to the live size and encodes them with libx264 (``ultrafast``,
    ``zerolatency``: no frame delay, no B-frames), SPS/PPS in front of every keyframe as WebRTC
    needs. Constrained baseline, the profile every browser decodes.

    ``request_keyframe`` and ``bitrate_bps`` may be set from any thread; ``encode`` runs on the
    one live encoder thread. A bitrate change of more than 10 % reopens the codec (libx264 keeps
    its rate once open), which starts with a keyframe.
    """

    def __init__(self, width: int, height: int, fps: float, bitrate_bps: int, keyframe_interval_s: float) -> None:
        self.width, self.height = width, height
        self._rate = fractions.Fraction(fps).limit_denominator(1000)
        self._gop = max(1, round(fps * keyframe_interval_s))
        self._lock = threading.Lock()
        self._want_bps = bitrate_bps
        self._key_requested = False
        self._ctx: av.VideoCodecContext | None = None
        self._open_bps = 0
        self._t0_ns: int | None = None
        self.frames = 0
        self.keyframes = 0
        self.reopened = 0

    @property
    def bitrate_bps(self) -> int:
        with self._lock:
            return self._want_bps

    @bitrate_bps.setter
    def bitrate_bps(self, value: int) -> None:
        with self._lock:
            self._want_bps = int(value)

    def request_keyframe(self) -> None:
        with self._lock:
            self._key_requested = True

    def _context(self) -> av.VideoCodecContext:
        with self._lock:
            want = self._want_bps
        if self._ctx is not None and abs(want - self._open_bps) <= 0.1 * self._open_bps:
            return self._ctx
        if self._ctx is not None:
            self.reopened += 1
        ctx = av.CodecContext.create("libx264", "w")
        assert isinstance(ctx, av.VideoCodecContext)
        ctx.width, ctx.height, ctx.pix_fmt = self.width, self.height, "yuv420p"
        ctx.time_base = fractions.Fraction(1, RTP_CLOCK_HZ)
        ctx.framerate = self._rate
        ctx.bit_rate = want
        ctx.gop_size = self._gop
        ctx.max_b_frames = 0
        ctx.thread_count = 1
        ctx.options = {"preset": "ultrafast", "tune": "zerolatency", "profile": "baseline", "level": "3.1",
                       "x264-params": f"keyint={self._gop}:min-keyint={self._gop}:scenecut=0:"
                                      f"vbv-maxrate={want // 1000}:vbv-bufsize={want // 2000}"}
        ctx.open()
        self._ctx, self._open_bps = ctx, want
        return ctx

    def encode(self, frame: VideoFrame) -> list[av.Packet[Any]]:
        """Packets for ``frame`` (time stamps in the 90 kHz RTP clock from the capture's monotonic time)."""
        if frame.pixel_format != "yuv420p":
            raise LiveEncoderError(f"live view takes yuv420p frames, the camera gives {frame.pixel_format}")
        try:
            src = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame.data), format="yuv420p")
            small = src.reformat(width=self.width, height=self.height, interpolation="AREA") \
                if (frame.width, frame.height) != (self.width, self.height) else src
            ctx = self._context()
            if self._t0_ns is None:
                self._t0_ns = frame.mono_ns
            small.pts = (frame.mono_ns - self._t0_ns) * RTP_CLOCK_HZ // 1_000_000_000
            small.time_base = fractions.Fraction(1, RTP_CLOCK_HZ)
            with self._lock:
                key, self._key_requested = self._key_requested, False
            small.pict_type = av.video.frame.PictureType.I if key else av.video.frame.PictureType.NONE
            packets = list(ctx.encode(small))
        except (av.FFmpegError, ValueError) as exc:
            raise LiveEncoderError(f"live encoder: {exc}") from exc
        self.frames += 1
        for p in packets:
            p.time_base = fractions.Fraction(1, RTP_CLOCK_HZ)
            if p.is_keyframe:
                self.keyframes += 1
        return packets

    def close(self) -> None:
        self._ctx = None
