"""What ffprobe -count_frames -show_streams -show_packets -show_format tells about a media file, with PyAV.

The project already depends on PyAV (the same libavformat and libavcodec ffprobe uses), so the
tests decode and probe with it instead of needing the ffmpeg package. Like ``ffprobe -v error``
with an empty stderr, any error libav logs while demuxing or decoding fails the probe.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.logging
import av.stream


class ProbeError(Exception):
    """The media did not open, or libav logged errors while demuxing or decoding it."""


@dataclass(frozen=True, slots=True)
class ProbedPacket:
    pts_s: float
    duration_s: float
    keyframe: bool


@dataclass(frozen=True, slots=True)
class ProbedStream:
    index: int
    kind: str  # "video", "audio", ...
    codec: str
    title: str | None
    width: int | None
    height: int | None
    pix_fmt: str | None
    sample_rate_hz: int | None
    channels: int | None
    frames_decoded: int  # ffprobe's nb_read_frames: frames (audio: codec frames) the decoder returned
    packets: tuple[ProbedPacket, ...]


@dataclass(frozen=True, slots=True)
class Probe:
    tags: dict[str, str]  # the container's tags (ffprobe's format.tags)
    streams: tuple[ProbedStream, ...]


def _seconds(value: int | None, time_base: Fraction | None) -> float:
    return 0.0 if value is None or time_base is None else float(value * time_base)


def _stream(stream: av.stream.Stream, frames: int, packets: list[ProbedPacket]) -> ProbedStream:
    ctx: Any = stream.codec_context  # a video or an audio codec context, by stream.type
    video, audio = stream.type == "video", stream.type == "audio"
    return ProbedStream(
        index=stream.index,
        kind=stream.type,
        codec=ctx.name,
        title=stream.metadata.get("title"),
        width=ctx.width if video else None,
        height=ctx.height if video else None,
        pix_fmt=ctx.pix_fmt if video else None,
        sample_rate_hz=ctx.sample_rate if audio else None,
        channels=ctx.layout.nb_channels if audio else None,
        frames_decoded=frames,
        packets=tuple(packets),
    )


def probe(source: bytes | Path) -> Probe:
    """Open ``source`` (bytes or a file), demux and decode every packet; raise ProbeError on any libav error."""
    frames: dict[int, int] = {}
    packets: dict[int, list[ProbedPacket]] = {}
    with av.logging.Capture() as logs:
        av.logging.set_level(av.logging.ERROR)
        try:
            with av.open(io.BytesIO(source) if isinstance(source, bytes) else str(source), "r") as container:
                for packet in container.demux():
                    index = packet.stream.index
                    if packet.pts is not None:  # None: the demuxer's end-of-stream packet that flushes the decoder
                        packets.setdefault(index, []).append(ProbedPacket(
                            _seconds(packet.pts, packet.time_base), _seconds(packet.duration, packet.time_base),
                            packet.is_keyframe))
                    frames[index] = frames.get(index, 0) + len(packet.decode())
                # read while the container is open: its streams do not outlive it
                result = Probe(dict(container.metadata), tuple(
                    _stream(s, frames.get(s.index, 0), packets.get(s.index, [])) for s in container.streams))
        except av.FFmpegError as exc:
            raise ProbeError(f"probing {'media bytes' if isinstance(source, bytes) else source}: {exc}") from exc
        finally:
            av.logging.set_level(None)
    errors = [f"{name}: {message.strip()}" for level, name, message in logs if level <= av.logging.ERROR]
    if errors:
        raise ProbeError("libav reported: " + "; ".join(errors))
    return result
