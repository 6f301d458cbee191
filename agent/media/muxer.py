"""Per-segment Matroska muxer that streams already-encoded packets into a non-seekable byte sink."""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping, Sequence
from fractions import Fraction
from types import TracebackType
from typing import NoReturn, Protocol, Self

import av
import av.container
import av.stream

from .packets import EncodedPacket, MediaError, TrackSpec

log = logging.getLogger(__name__)

_NS = Fraction(1, 1_000_000_000)
_IO_BUFFER_BYTES = 64 * 1024
_MAX_INTERLEAVE_US = 500_000
_LAYOUTS = {1: "mono", 2: "stereo"}


class ByteSink(Protocol):
    """Where the container bytes go (in the recorder, an encrypting writer). Need not seek."""

    def write(self, data: bytes, /) -> int | None: ...


class _SinkWriter:
    """The file-like face PyAV sees: write-only and not seekable, so nothing is ever rewritten.

    Retries short writes so no byte is silently lost (FFmpeg ignores the count a write returns).
    """

    def __init__(self, sink: ByteSink) -> None:
        self._sink = sink
        self.bytes_written = 0

    def write(self, data: bytes) -> int:
        chunk = data
        while chunk:
            count = self._sink.write(chunk)
            if count is None:
                count = len(chunk)
            if not 0 < count <= len(chunk):
                raise OSError(f"sink accepted {count} of {len(chunk)} bytes")
            self.bytes_written += count
            chunk = chunk[count:]
        return len(data)

    def seekable(self) -> bool:
        return False


class SegmentMuxer:
    """Writes one self-contained Matroska segment from packets the encoders already produced.

    Streams are declared from :class:`TrackSpec` alone, nothing is re-encoded. Timestamps are
    rebased so that ``start_ns`` (host monotonic) is 0 in the file; no packet may start before
    it. Feed packets in ascending time across tracks (the ring buffer's order); libavformat
    interleaves what is out of order by up to 10 s. The header is written by the constructor
    and the bytes reach ``sink`` as they are produced, in chunks of up to 64 KiB; :meth:`close`
    writes the rest. The sink cannot seek, so the file has no Cues and no Duration; players
    and ffprobe read it front to back.

    Any failure, including the sink's own exceptions, comes out as :class:`MediaError` saying
    what the muxer was doing; after one the muxer is broken and refuses more packets. A
    failure may surface one call late, because libavformat buffers. Not thread-safe.
    """

    def __init__(
        self,
        sink: ByteSink,
        tracks: Sequence[TrackSpec],
        start_ns: int,
        title: str = "",
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        names = [t.name for t in tracks]
        if not tracks or len(set(names)) != len(names):
            raise MediaError(f"segment needs at least one track and unique track names, got {names}")
        self._start_ns = start_ns
        self._writer = _SinkWriter(sink)
        self._streams: dict[str, av.stream.Stream] = {}
        self._frames: dict[str, int] = dict.fromkeys(names, 0)
        self._packets: dict[str, int] = dict.fromkeys(names, 0)
        self._broken: str | None = None
        self._closed = False
        try:
            # flush_packets hands every muxed packet to the sink at once, and a short interleave
            # delta bounds what libavformat may hold back when one track is slow: together they
            # keep what a power cut can lose to about a second (the evidence writer's checkpoint).
            self._container: av.container.OutputContainer = av.open(
                self._writer,
                "w",
                format="matroska",
                buffer_size=_IO_BUFFER_BYTES,
                options={"fflags": "+flush_packets", "max_interleave_delta": str(_MAX_INTERLEAVE_US)},
            )
        except Exception as e:
            raise MediaError(f"opening Matroska output: {e}") from e
        try:
            if title:
                self._container.metadata["title"] = title
            self._container.metadata.update(metadata or {})
            self._add_streams(tracks)
        except Exception as e:
            self._container.close()
            raise MediaError(f"declaring tracks {names}: {e}") from e
        try:
            self._container.start_encoding()
        except Exception as e:
            self._fail("writing the Matroska header", e)

    def _add_streams(self, tracks: Sequence[TrackSpec]) -> None:
        """Declare each track by copying a never-opened template, then filling in the spec.

        ``add_stream_from_template`` marks the new codec context as initialised, so libavformat
        takes its parameters (size, format, extradata) as they are and never opens an encoder.
        The template comes from a scratch container that is never written.
        """
        scratch = av.open(io.BytesIO(), "w", format="matroska")
        try:
            for spec in tracks:
                template = scratch.add_stream(spec.codec)
                stream = self._container.add_stream_from_template(template)
                _describe(stream, spec)
                self._streams[spec.name] = stream
        finally:
            scratch.close()

    @property
    def start_ns(self) -> int:
        return self._start_ns

    @property
    def bytes_written(self) -> int:
        """Bytes the sink has accepted so far."""
        return self._writer.bytes_written

    def write(self, packet: EncodedPacket) -> None:
        """Mux one packet. Raises MediaError for an unknown track, a packet before ``start_ns``,
        a closed or broken muxer, or any codec, container or sink failure."""
        if self._broken is not None:
            raise MediaError(f"segment at {self._start_ns}: broken earlier by {self._broken}")
        if self._closed:
            raise MediaError(f"segment at {self._start_ns}: write after close")
        stream = self._streams.get(packet.track)
        if stream is None:
            raise MediaError(f"segment at {self._start_ns}: no track {packet.track!r} in {list(self._streams)}")
        pts = packet.pts_ns - self._start_ns
        dts = packet.dts_ns - self._start_ns
        if pts < 0 or dts < 0:
            raise MediaError(
                f"segment at {self._start_ns}: {packet.track!r} packet at {packet.pts_ns} starts before the segment"
            )
        if not self._packets[packet.track] and not packet.keyframe:
            log.warning("segment at %d: track %r starts without a keyframe", self._start_ns, packet.track)
        av_packet = av.Packet(packet.data)  # references the bytes, no copy
        av_packet.stream = stream
        av_packet.time_base = _NS
        av_packet.pts = pts
        av_packet.dts = dts
        av_packet.duration = packet.duration_ns
        av_packet.is_keyframe = packet.keyframe
        try:
            self._container.mux_one(av_packet)
        except Exception as e:  # PyAV re-raises whatever the sink raised, so no narrower type fits
            self._fail(f"writing {packet.track!r} packet at +{pts / 1e9:.3f} s ({len(packet.data)} bytes)", e)
        self._packets[packet.track] += 1
        self._frames[packet.track] += packet.frames

    def frames_written(self) -> dict[str, int]:
        """Per track, the frames (video, thermal) or samples per channel (audio) muxed so far."""
        return dict(self._frames)

    def packets_written(self) -> dict[str, int]:
        """Per track, the packets muxed so far."""
        return dict(self._packets)

    def close(self) -> None:
        """Flush interleaving buffers and finish the container. Idempotent.

        Raises MediaError if that fails. After an earlier failure it only releases resources.
        """
        if self._closed:
            return
        self._closed = True
        try:
            self._container.close()
        except Exception as e:
            if self._broken is None:
                self._fail("finishing the segment (flushing packets, writing the trailer)", e)
            log.debug("segment at %d: close after failure: %s", self._start_ns, e)

    def _fail(self, doing: str, error: Exception) -> NoReturn:
        self._broken = f"{doing}: {type(error).__name__}: {error}"
        message = (f"segment at {self._start_ns}: {self._broken} "
                   f"(after {self._writer.bytes_written} bytes reached the sink)")
        if not self._closed:
            self._closed = True
            try:
                self._container.close()
            except Exception as e:  # the sink is already failing; keep the first error
                log.debug("segment at %d: releasing after failure: %s", self._start_ns, e)
        raise MediaError(message) from error

    def get_status(self) -> dict[str, object]:
        """A snapshot for the health report."""
        return {
            "start_ns": self._start_ns,
            "tracks": list(self._streams),
            "bytes_written": self._writer.bytes_written,
            "packets": dict(self._packets),
            "frames": dict(self._frames),
            "closed": self._closed,
            "broken": self._broken,
        }

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _describe(stream: av.stream.Stream, spec: TrackSpec) -> None:
    """Copy ``spec`` into the stream's (never opened) codec context."""
    ctx = stream.codec_context
    if spec.kind == "audio":
        assert isinstance(ctx, av.AudioCodecContext)
        if not spec.sample_rate_hz or not spec.channels:
            raise ValueError(f"audio track {spec.name!r} needs sample_rate_hz and channels")
        ctx.sample_rate = spec.sample_rate_hz
        ctx.layout = _LAYOUTS.get(spec.channels, f"{spec.channels}c")
        ctx.time_base = Fraction(1, spec.sample_rate_hz)
    else:
        assert isinstance(ctx, av.VideoCodecContext)
        if not spec.width or not spec.height:
            raise ValueError(f"{spec.kind} track {spec.name!r} needs width and height")
        ctx.width = spec.width
        ctx.height = spec.height
        if spec.pixel_format:
            ctx.pix_fmt = spec.pixel_format
        ctx.framerate = Fraction(spec.rate_num, spec.rate_den)
        ctx.time_base = Fraction(spec.rate_den, spec.rate_num)
    ctx.bit_rate = spec.bitrate_bps or 0
    ctx.extradata = spec.extradata
    stream.metadata["title"] = spec.name
