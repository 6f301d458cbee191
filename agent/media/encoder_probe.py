"""Probing this board's H.264 encoders: open each with a camera's settings and check it keyframes.

The I/O shell of :mod:`agent.media.encoder_select`. An encoder counts as usable only if it opens
with the camera's size, rate and pixel format, gives its SPS/PPS as a global header (the
Matroska muxer declares the track from it), and turns a requested keyframe into one: segments
and recordings start at keyframes, so an encoder that ignores the request is refused here, with
the reason, rather than found out in the evidence.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from hal.camera import VideoFrame

from .encoder_select import SOFTWARE, EncoderRequest, ProbeResult
from .encoders import VideoEncoder
from .packets import EncodedPacket, MediaError

log = logging.getLogger(__name__)

# The frames of the keyframe test: one is requested as a keyframe, well inside the GOP.
PROBE_FRAMES = 6
FORCED_AT = 3
FRAME_PERIOD_NS = 1_000_000


def _blank(request: EncoderRequest, index: int) -> VideoFrame:
    """A grey yuv420p frame of the request's size; the encoder converts it as it would a camera's."""
    planes = np.full((request.height * 3 // 2, request.width), 128, dtype=np.uint8)
    mono_ns = (index + 1) * FRAME_PERIOD_NS
    return VideoFrame("probe", index, mono_ns, mono_ns, request.width, request.height, "yuv420p", planes)


def keyframe_test(codec: str, request: EncoderRequest) -> str:
    """Encode a few frames with ``codec``, one of them requested as a keyframe; "" when the codec
    did as asked, else what went wrong. Raises MediaError when the codec does not open or run."""
    gop = max(request.gop_frames, PROBE_FRAMES + 1)  # so only the request can explain a keyframe
    with VideoEncoder("probe", request.width, request.height, request.fps_num, request.fps_den,
                      pixel_format=request.pixel_format, bitrate_bps=request.bitrate_bps, gop_frames=gop,
                      codec=codec, threads=request.threads) as encoder:
        if not encoder.spec.extradata:
            return "opens but gives no SPS/PPS global header, which the Matroska track needs"
        packets: list[EncodedPacket] = []
        for index in range(PROBE_FRAMES):
            if index == FORCED_AT:
                encoder.request_keyframe()
            packets += encoder.encode(_blank(request, index))
        packets += encoder.flush()
    keyframes = {p.pts_ns for p in packets if p.keyframe}
    forced_ns = _blank(request, FORCED_AT).mono_ns
    if len(packets) != PROBE_FRAMES:
        return f"gave {len(packets)} packets for {PROBE_FRAMES} frames"
    if forced_ns not in keyframes:
        return "a requested keyframe (frame pict_type I) did not come out as one"
    return ""


def v4l2_devices(dev_dir: Path) -> list[str]:
    """The V4L2 device nodes here (``/dev/video*``), sorted; FFmpeg's M2M wrapper scans these."""
    try:
        names = os.listdir(dev_dir)
    except OSError:
        return []
    return sorted((str(dev_dir / n) for n in names if n.startswith("video")), key=lambda p: (len(p), p))


class CodecProbe:
    """Answers "is this encoder usable for this request?" by trying it, once per run.

    Callable as ``probe(codec, request)``; results are cached by (codec, request), so cameras
    with the same settings are probed once. ``dev_dir`` is where V4L2 device nodes appear.
    Not thread-safe: the unit is built on one thread.
    """

    def __init__(self, dev_dir: Path = Path("/dev")) -> None:
        self._dev_dir = dev_dir
        self._cache: dict[tuple[str, EncoderRequest], ProbeResult] = {}

    def __call__(self, codec: str, request: EncoderRequest) -> ProbeResult:
        key = (codec, request)
        if key not in self._cache:
            self._cache[key] = self._probe(codec, request)
            log.debug("encoder probe %s %s: %s", codec, request.describe(), self._cache[key].reason)
        return self._cache[key]

    def _probe(self, codec: str, request: EncoderRequest) -> ProbeResult:
        where = ""
        if codec != SOFTWARE:
            devices = v4l2_devices(self._dev_dir)
            if not devices:
                return ProbeResult(codec, False, f"no V4L2 M2M encoder on this board (no {self._dev_dir}/video*)")
            where = f" (V4L2 devices: {', '.join(devices)})"
        try:
            problem = keyframe_test(codec, request)
        except (MediaError, ValueError) as e:
            return ProbeResult(codec, False, f"does not open at {request.describe()}{where}: {e}")
        if problem:
            return ProbeResult(codec, False, f"refused at {request.describe()}{where}: {problem}")
        threads = f", {request.threads or 'auto'} thread(s)" if codec == SOFTWARE else ""
        return ProbeResult(codec, True, f"opened at {request.describe()}{threads}, requested keyframes honoured"
                           f"{where}")
