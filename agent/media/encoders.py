"""Continuous encoders for the picture tracks: H.264 for the visible cameras, lossless FFV1 for thermal.

Each encoder owns one open PyAV codec context and turns HAL frames into
:class:`~agent.media.packets.EncodedPacket` on the host monotonic timeline. The audio encoder
lives in :mod:`agent.media.audio` and is re-exported here.
"""

from __future__ import annotations

import dataclasses
import logging
from fractions import Fraction
from typing import Any

import av
import av.codec.context
import av.video.frame
import numpy as np
import numpy.typing as npt

from hal.camera import VideoFrame
from hal.thermal import ThermalFrame

from .audio import AudioEncoder
from .codec import NS_PER_S, EncoderBase, open_encoder
from .packets import EncodedPacket, MediaError, TrackSpec

__all__ = ["AudioEncoder", "ThermalEncoder", "VideoEncoder"]

log = logging.getLogger(__name__)

# Formats av.VideoFrame.from_numpy_buffer wraps without copying; others go through from_ndarray.
_ZERO_COPY_FORMATS = frozenset({"yuv420p", "nv12", "gray", "gray16le", "rgb24", "bgr24"})
# from_numpy_buffer derives a 4:2:0 height as rows // 6 * 4, right only when height % 4 == 0.
_CHROMA_STACKED = frozenset({"yuv420p", "nv12"})
# The most grey frames a codec may take before it gives its SPS/PPS (VideoEncoder._prime).
PRIME_FRAMES_MAX = 16


def _frame_from_array(array: npt.NDArray[np.uint8] | npt.NDArray[np.uint16], pixel_format: str) -> av.VideoFrame:
    """Wrap ``array`` without copying when PyAV can (the codec copies it in), else copy it."""
    contiguous = array.flags.c_contiguous
    if (pixel_format in _ZERO_COPY_FORMATS and contiguous
            and not (pixel_format in _CHROMA_STACKED and array.shape[0] % 6)):
        return av.VideoFrame.from_numpy_buffer(array, format=pixel_format)
    return av.VideoFrame.from_ndarray(array if contiguous else array.copy(), format=pixel_format)


class _PictureEncoder(EncoderBase):
    """Maps codec pts back to monotonic time for one picture track.

    The codec pts counts submitted frames in a 1/fps time base; ``_mono_by_pts`` keeps each
    frame's ``mono_ns`` until its packet comes out, so a codec with delay still gets the right
    timestamps. Frames must arrive with increasing ``mono_ns``.
    """

    def __init__(self, track: str, kind: str, ctx: av.VideoCodecContext, rate: Fraction,
                 bitrate_bps: int | None) -> None:
        spec = TrackSpec(
            name=track,
            kind=kind,
            codec=ctx.codec.canonical_name,
            width=ctx.width,
            height=ctx.height,
            pixel_format=ctx.pix_fmt,
            sample_rate_hz=None,
            channels=None,
            rate_num=rate.numerator,
            rate_den=rate.denominator,
            extradata=ctx.extradata,
            bitrate_bps=bitrate_bps,
        )
        super().__init__(track, ctx, spec)
        self._width = ctx.width
        self._height = ctx.height
        self._period_ns = round(NS_PER_S / rate)
        self._mono_by_pts: dict[int, int] = {}
        self._next_pts = 0
        self._first_camera_pts = 0  # frames before this pts primed the codec (see VideoEncoder)
        self._last_mono_ns: int | None = None

    def _check_input(self, width: int, height: int, mono_ns: int, index: int) -> None:
        self._context()
        if (width, height) != (self._width, self._height):
            raise MediaError(
                f"track {self._track!r}: frame {index} is {width}x{height}, "
                f"encoder is {self._width}x{self._height}"
            )
        if self._last_mono_ns is not None and mono_ns <= self._last_mono_ns:
            raise MediaError(
                f"track {self._track!r}: frame {index} mono_ns {mono_ns} does not follow {self._last_mono_ns}"
            )

    def _encode_picture(self, picture: av.VideoFrame, mono_ns: int) -> list[EncodedPacket]:
        picture.pts = self._next_pts
        self._mono_by_pts[self._next_pts] = mono_ns
        self._next_pts += 1
        self._last_mono_ns = mono_ns
        return self._packets(self._run(picture))

    def _packets(self, packets: list[av.Packet[Any]]) -> list[EncodedPacket]:
        """The codec's packets as EncodedPackets, without those of frames that were never the camera's."""
        return [self._to_packet(p) for p in packets if p.pts is None or p.pts >= self._first_camera_pts]

    def _to_packet(self, packet: av.Packet[Any]) -> EncodedPacket:
        pts = packet.pts
        mono_ns = self._mono_by_pts.pop(pts, None) if pts is not None else None
        if mono_ns is None:
            raise MediaError(f"track {self._track!r}: codec returned a packet with unknown pts {pts}")
        data = bytes(packet)
        keyframe = packet.is_keyframe
        self._account(data, keyframe)
        # No B-frames, so decode order is presentation order and dts equals pts.
        return EncodedPacket(self._track, mono_ns, mono_ns, self._period_ns, keyframe, data, 1)

    def flush(self) -> list[EncodedPacket]:
        """Drain the codec; afterwards the encoder takes no more frames. Idempotent."""
        if self._ctx is None or self._flushed:
            return []
        return self._packets(self._run(None))

    def close(self) -> None:
        super().close()
        self._mono_by_pts.clear()


class VideoEncoder(_PictureEncoder):
    """H.264 (libx264 by default, or the hardware ``h264_v4l2m2m``) for one visible camera, running
    for as long as the camera does; :mod:`agent.media.encoder_select` says which one a camera gets.

    No B-frames and zero-latency tuning, so each frame comes straight back as one packet with
    dts == pts. An IDR every ``gop_frames`` frames, and on the next frame after
    :meth:`request_keyframe`. SPS/PPS go in ``spec.extradata`` (global header), as Matroska
    wants. ``threads`` is the codec's thread count (0: FFmpeg picks); 1 keeps a camera on one core.
    """

    def __init__(
        self,
        track: str,
        width: int,
        height: int,
        fps_num: int,
        fps_den: int = 1,
        pixel_format: str = "yuv420p",
        bitrate_bps: int = 4_000_000,
        gop_frames: int = 30,
        codec: str = "libx264",
        preset: str = "ultrafast",
        tune: str = "zerolatency",
        threads: int = 1,
        scale: bool = False,
    ) -> None:
        """``scale``: frames of any size are scaled to ``width`` x ``height`` (the background
        recording's; FFmpeg's swscale) instead of refused."""
        if width <= 0 or height <= 0 or width % 2 or height % 2:
            raise ValueError(f"track {track!r}: size {width}x{height} must be positive and even")
        if fps_num <= 0 or fps_den <= 0 or gop_frames <= 0 or bitrate_bps <= 0 or threads < 0:
            raise ValueError(f"track {track!r}: fps, gop_frames, bitrate_bps must be > 0, threads >= 0")
        rate = Fraction(fps_num, fps_den)
        options: dict[str, str] = {}
        if codec.startswith("libx26"):
            # forced-idr: a requested keyframe is an IDR a segment can start at. A one-second
            # VBV keeps each segment near bitrate_bps whatever the scene does.
            options = {"preset": preset, "tune": tune, "forced-idr": "1",
                       "maxrate": str(bitrate_bps), "bufsize": str(bitrate_bps)}

        def configure(ctx: av.codec.context.CodecContext) -> None:
            assert isinstance(ctx, av.VideoCodecContext)
            ctx.width = width
            ctx.height = height
            ctx.pix_fmt = pixel_format
            ctx.framerate = rate
            ctx.time_base = 1 / rate
            ctx.gop_size = gop_frames
            ctx.max_b_frames = 0
            ctx.bit_rate = bitrate_bps
            ctx.thread_count = threads

        ctx = open_encoder(track, codec, options, configure)
        assert isinstance(ctx, av.VideoCodecContext)
        super().__init__(track, "video", ctx, rate, bitrate_bps)
        self._pixel_format = pixel_format
        self._encoder = codec
        self._scale = scale
        self._keyframe_requested = False
        self._keyframes_requested = 0
        if not ctx.extradata:
            self._prime(ctx)
        log.info("track %r: %s %dx%d@%s %d bps, IDR every %d frames", track, codec, width, height,
                 rate, bitrate_bps, gop_frames)

    def _prime(self, ctx: av.VideoCodecContext) -> None:
        """Feed grey frames until the codec has its SPS/PPS, for encoders that learn them only from
        their first output (FFmpeg's V4L2 M2M wrapper); their packets are dropped, and the first
        camera frame is a requested keyframe, so nothing refers to them. Raises MediaError when
        no header comes within PRIME_FRAMES_MAX frames."""
        grey = np.full((self._height * 3 // 2, self._width), 128, dtype=np.uint8)
        for _ in range(PRIME_FRAMES_MAX):
            picture = _frame_from_array(grey, "yuv420p")
            if self._pixel_format != "yuv420p":
                picture = picture.reformat(format=self._pixel_format)
            picture.pts = self._next_pts
            self._next_pts += 1
            self._run(picture)  # packets of priming frames are never the camera's
            if ctx.extradata:
                break
        else:
            raise MediaError(f"track {self._track!r}: {self._encoder} gave no SPS/PPS header after "
                             f"{PRIME_FRAMES_MAX} frames")
        self._first_camera_pts = self._next_pts
        self._spec = dataclasses.replace(self._spec, extradata=ctx.extradata)
        self.request_keyframe()
        log.info("track %r: %s gave its SPS/PPS after %d priming frames", self._track, self._encoder,
                 self._first_camera_pts)

    def request_keyframe(self) -> None:
        """Make the next encoded frame an IDR, so a recording or segment can start there."""
        self._keyframe_requested = True

    def encode(self, frame: VideoFrame) -> list[EncodedPacket]:
        """Encode one camera frame; returns the packets the codec has ready (with libx264, one).

        Raises MediaError if the frame's size differs from the encoder's, its ``mono_ns`` does
        not increase, or the codec fails. A frame in another pixel format is converted (slow).
        """
        size = (self._width, self._height) if self._scale else (frame.width, frame.height)
        self._check_input(*size, frame.mono_ns, frame.index)
        try:
            picture = _frame_from_array(frame.data, frame.pixel_format)
            if self._scale and (frame.width, frame.height) != size:
                picture = picture.reformat(width=self._width, height=self._height, format=self._pixel_format)
            elif frame.pixel_format != self._pixel_format:
                picture = picture.reformat(format=self._pixel_format)
        except ValueError as e:
            raise MediaError(f"track {self._track!r}: frame {frame.index} ({frame.pixel_format}): {e}") from e
        if self._keyframe_requested:
            picture.pict_type = av.video.frame.PictureType.I
            self._keyframe_requested = False
            self._keyframes_requested += 1
        return self._encode_picture(picture, frame.mono_ns)

    def get_status(self) -> dict[str, object]:
        status = super().get_status()
        status["keyframes_requested"] = self._keyframes_requested
        status["encoder"] = self._encoder
        return status


class ThermalEncoder(_PictureEncoder):
    """Lossless FFV1 (version 3, per-slice CRCs) of radiometric centikelvin frames as ``gray16le``.

    Every frame is intra and flagged as a keyframe, so a segment can be cut anywhere, and the
    decoded uint16 values equal the sensor's exactly.
    """

    def __init__(self, track: str, width: int = 160, height: int = 120, rate_num: int = 87,
                 rate_den: int = 10) -> None:
        if width <= 0 or height <= 0 or rate_num <= 0 or rate_den <= 0:
            raise ValueError(f"track {track!r}: size and rate must be positive")
        rate = Fraction(rate_num, rate_den)

        def configure(ctx: av.codec.context.CodecContext) -> None:
            assert isinstance(ctx, av.VideoCodecContext)
            ctx.width = width
            ctx.height = height
            ctx.pix_fmt = "gray16le"
            ctx.framerate = rate
            ctx.time_base = 1 / rate
            ctx.gop_size = 1
            ctx.thread_count = 1

        ctx = open_encoder(track, "ffv1", {"level": "3", "slicecrc": "1"}, configure)
        assert isinstance(ctx, av.VideoCodecContext)
        super().__init__(track, "thermal", ctx, rate, None)

    def encode(self, frame: ThermalFrame) -> list[EncodedPacket]:
        """Encode one thermal frame; raises MediaError on a size mismatch or a non-increasing mono_ns."""
        height, width = frame.data.shape if frame.data.ndim == 2 else (-1, -1)
        self._check_input(width, height, frame.mono_ns, frame.index)
        # gray16le means little-endian samples; on a little-endian host this is a no-op view.
        picture = _frame_from_array(frame.data.astype("<u2", copy=False), "gray16le")
        return self._encode_picture(picture, frame.mono_ns)
