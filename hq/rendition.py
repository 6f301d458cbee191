"""Browser-playable renditions of a recording's decrypted segments, made in memory (no file).

``video_rendition`` remuxes the camera's H.264 bitstream (no re-encode) and the audio (Opus or AAC,
copied) of consecutive segments into one fragmented MP4 (``empty_moov``, a fragment per keyframe),
yielded piece by piece as it is made, so playback starts before the last segment is decrypted.
``thermal_rendition`` decodes the lossless radiometric thermal track (FFV1 gray16le, centikelvin)
and encodes a colour-mapped picture of it as H.264; the original stays untouched in the store.

Seeking is by segment: a rendition starts at its first piece's first camera keyframe (a segment
starts at one, docs/evidence-format.md 10.3; a recording's first segment, holding the pre-event
buffer, may start with sound and thermal before it) and its time 0 is that keyframe. The MP4 muxer
starts every fragmented file at 0, so that time cannot travel inside it: the renditions fill in a
``StreamInfo`` before their first piece, where time 0 lies on the recording's timeline and the
codecs (RFC 6381) a Media Source player declares, and the player offsets the stream by it.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

FRAGMENTED = {"movflags": "frag_keyframe+empty_moov+default_base_moof"}
MS = Fraction(1, 1000)
# The thermal palette ("iron"): black, purple, red, orange, yellow, white, from cold to hot.
IRON = np.array([[0, 0, 0], [60, 0, 120], [170, 0, 140], [235, 60, 20], [255, 170, 0], [255, 240, 120],
                 [255, 255, 255]], dtype=np.float32)
DEFAULT_SPAN_CK = (28315, 31815)  # 10 to 45 degrees Celsius: people against a street


class RenditionError(Exception):
    """A segment's media cannot be made playable; the message says which and why."""


@dataclass(slots=True)
class StreamInfo:
    """Filled in by a rendition before it yields its first bytes: where its time 0 lies on the
    recording's timeline (ms) and its codecs as a browser's ``MediaSource`` wants them
    (``avc1.64001f,opus``)."""

    start_ms: int | None = None
    codecs: str = ""


def codec_string(codec_context: Any) -> str:
    """The RFC 6381 name of a stream's codec: ``avc1.PPCCLL`` from H.264's parameter set (avcC or
    Annex B extradata), ``opus``, ``mp4a.40.2``; empty when unknown (the player then says so)."""
    name = codec_context.name
    if name in ("h264", "libx264"):
        x = bytes(codec_context.extradata or b"")
        if len(x) >= 4 and x[0] == 1:  # avcC: version, profile, compatibility, level
            return f"avc1.{x[1]:02x}{x[2]:02x}{x[3]:02x}"
        at = x.find(b"\x00\x00\x01")
        while at >= 0 and at + 6 <= len(x):
            if x[at + 3] & 0x1F == 7:  # an SPS: profile, constraint flags, level follow its header
                return f"avc1.{x[at + 4]:02x}{x[at + 5]:02x}{x[at + 6]:02x}"
            at = x.find(b"\x00\x00\x01", at + 3)
        return ""
    return {"opus": "opus", "aac": "mp4a.40.2", "mp3": "mp4a.40.34", "flac": "flac"}.get(name, "")


@dataclass(frozen=True, slots=True)
class Piece:
    """One segment's decrypted Matroska and where it starts on the recording's timeline."""

    seq: int
    media: bytes
    offset_ms: int


@dataclass(frozen=True, slots=True)
class _Packet:
    kind: str  # "video" or "audio"
    at_ms: int  # presentation time on the recording's timeline
    order_ms: int  # decode time: packets are muxed in this order (B-frames are sent before they show)
    keyframe: bool
    packet: Any


class _Sink(io.RawIOBase):
    """Collects what the muxer writes, for the generator to hand on; never seeks."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[bytes] = []
        self.position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self.parts.append(chunk)
        self.position += len(chunk)
        return len(chunk)

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


def _streams(container: Any, kind: str, name: str | None) -> Any:
    found = [s for s in container.streams if s.type == ("video" if kind != "audio" else "audio")
             and (s.codec_context.name == "ffv1") == (kind == "thermal")]
    if name is not None:
        found = [s for s in found if s.metadata.get("title", s.metadata.get("TITLE")) == name] or found
    return found[0] if found else None


def _open(piece: Piece) -> Any:
    try:
        return av.open(io.BytesIO(piece.media), "r", format="matroska")
    except av.error.FFmpegError as exc:
        raise RenditionError(f"seq {piece.seq}: the decrypted media does not open: {exc}") from exc


def video_rendition(pieces: Iterable[Piece], camera: str | None = None,
                    info: StreamInfo | None = None) -> Iterator[bytes]:
    """Fragmented MP4 of the camera (the first, or the one titled ``camera``) and the audio;
    ``info`` is filled in before the first bytes."""
    info = info if info is not None else StreamInfo()
    sink = _Sink()
    out: Any = None
    streams: dict[str, Any] = {}
    started = False
    for piece in pieces:
        with _open(piece) as src:
            video, audio = _streams(src, "video", camera), _streams(src, "audio", None)
            if video is None:  # the camera failed for this whole segment: the others still play
                log.warning("seq %d has no camera track; skipped", piece.seq)
                continue
            if out is None:
                out = av.open(sink, "w", format="mp4", options=FRAGMENTED)
                streams["video"] = out.add_stream_from_template(video)
                if audio is not None:
                    streams["audio"] = out.add_stream_from_template(audio)
            packets = _demux(src, piece, {"video": video, "audio": audio if "audio" in streams else None})
        if not started:
            packets = _from_first_keyframe(packets)
            started = bool(packets)
            if started:
                info.start_ms = next(p.at_ms for p in packets if p.kind == "video")
                info.codecs = ",".join(c for c in (codec_string(st.codec_context) for st in streams.values()) if c)
        for p in packets:
            p.packet.stream = streams[p.kind]
            out.mux(p.packet)
        yield sink.take()
    if out is None:
        raise RenditionError("no camera track in these segments")
    out.close()
    yield sink.take()


def _demux(src: Any, piece: Piece, wanted: dict[str, Any]) -> list[_Packet]:
    found: list[_Packet] = []
    by_index = {s.index: kind for kind, s in wanted.items() if s is not None}
    try:
        for packet in src.demux(*[s for s in wanted.values() if s is not None]):
            if packet.size == 0 or packet.pts is None:
                continue
            kind = by_index[packet.stream.index]
            tb = packet.time_base
            at_ms = piece.offset_ms + round(packet.pts * tb * 1000)
            order_ms = at_ms if packet.dts is None else piece.offset_ms + round(packet.dts * tb * 1000)
            shift = round(Fraction(piece.offset_ms, 1000) / tb)
            packet.pts += shift
            if packet.dts is not None:
                packet.dts += shift
            found.append(_Packet(kind, at_ms, order_ms, bool(packet.is_keyframe), packet))
    except av.error.FFmpegError as exc:
        if not found:
            raise RenditionError(f"seq {piece.seq}: the decrypted media does not demux: {exc}") from exc
        # a segment salvaged after a power cut ends mid-cluster: play what it holds
        log.warning("seq %d: media ends early (%s); playing its %d packets", piece.seq, exc, len(found))
    found.sort(key=lambda p: (p.order_ms, p.kind != "video"))  # stable: each stream keeps its own order
    return found


def _from_first_keyframe(packets: list[_Packet]) -> list[_Packet]:
    """The packets from the camera's first keyframe on (audio from the same time)."""
    first = next((i for i, p in enumerate(packets) if p.kind == "video" and p.keyframe), None)
    if first is None:
        return []
    at = packets[first].at_ms
    return [p for i, p in enumerate(packets) if i >= first or (p.kind == "audio" and p.at_ms >= at)]


def colour_map(frame_ck: npt.NDArray[np.uint16], span_ck: tuple[int, int] = DEFAULT_SPAN_CK) -> npt.NDArray[np.uint8]:
    """An RGB picture of radiometric centikelvin: the iron palette over ``span_ck``, clipped."""
    lo, hi = span_ck
    x = np.clip((frame_ck.astype(np.float32) - lo) / float(hi - lo), 0.0, 1.0) * (len(IRON) - 1)
    i = np.minimum(x.astype(np.int32), len(IRON) - 2)
    f = (x - i)[..., None]
    rgb = IRON[i] * (1 - f) + IRON[i + 1] * f
    return np.ascontiguousarray(rgb.astype(np.uint8))


def thermal_encoder(out: Any, frame: Any, options: dict[str, str]) -> Any:
    """An H.264 stream in ``out`` for colour-mapped pictures of ``frame``'s size (made even)."""
    enc = out.add_stream("libx264", rate=9)
    enc.width, enc.height = frame.width + frame.width % 2, frame.height + frame.height % 2
    enc.pix_fmt = "yuv420p"
    enc.codec_context.time_base = MS  # frames keep their own times, none rounded together
    enc.options = {**options, "threads": "1"}
    return enc


def colour_picture(frame: Any, at_ms: int, enc: Any, span_ck: tuple[int, int] = DEFAULT_SPAN_CK) -> Any:
    """The colour-mapped picture of a decoded thermal ``frame`` at ``at_ms``, padded to ``enc``'s size."""
    rgb = colour_map(frame.to_ndarray(format="gray16le"), span_ck)
    if rgb.shape[1] != enc.width or rgb.shape[0] != enc.height:
        rgb = np.pad(rgb, ((0, enc.height - rgb.shape[0]), (0, enc.width - rgb.shape[1]), (0, 0)))
    picture = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    picture.pts, picture.time_base = at_ms, MS
    return picture


def thermal_rendition(pieces: Iterable[Piece], span_ck: tuple[int, int] = DEFAULT_SPAN_CK,
                      info: StreamInfo | None = None) -> Iterator[bytes]:
    """Fragmented MP4 of the thermal track, colour-mapped and encoded as H.264 (every frame kept);
    ``info`` is filled in before the first bytes."""
    info = info if info is not None else StreamInfo()
    sink = _Sink()
    out: Any = None
    enc: Any = None
    for piece in pieces:
        with _open(piece) as src:
            thermal = _streams(src, "thermal", None)
            if thermal is None:
                continue
            try:
                for frame in src.decode(thermal):
                    if frame.pts is None:
                        continue
                    at_ms = piece.offset_ms + round(frame.pts * frame.time_base * 1000)
                    if out is None:
                        out = av.open(sink, "w", format="mp4", options=FRAGMENTED)
                        enc = thermal_encoder(out, frame, {"preset": "ultrafast", "tune": "zerolatency", "g": "9"})
                    if info.start_ms is None:
                        info.start_ms = at_ms
                    for packet in enc.encode(colour_picture(frame, at_ms, enc, span_ck)):
                        out.mux(packet)
                    if not info.codecs:
                        info.codecs = codec_string(enc.codec_context)
            except av.error.FFmpegError as exc:
                raise RenditionError(f"seq {piece.seq}: the thermal track does not decode: {exc}") from exc
        yield sink.take()
    if out is None:
        raise RenditionError("no thermal frame to play")
    for packet in enc.encode():
        out.mux(packet)
    out.close()
    yield sink.take()
