"""What every encoder shares: opening a PyAV encoder context, running it, counting its output."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Self

import av
import av.codec.context

from .packets import MediaError, TrackSpec

NS_PER_S = 1_000_000_000
GLOBAL_HEADER = int(av.codec.context.Flags.global_header)


def open_encoder(
    track: str,
    codec: str,
    options: Mapping[str, str],
    configure: Callable[[av.codec.context.CodecContext], None],
) -> av.codec.context.CodecContext:
    """Create encoder ``codec``, let ``configure`` set its fields, and open it with a global header.

    The global header puts the codec's parameter sets in ``extradata`` (as Matroska wants)
    instead of repeating them in the bitstream. Raises MediaError naming the track and codec
    when the codec is unknown or refuses the settings.
    """
    try:
        ctx = av.CodecContext.create(codec, "w")
    except (av.FFmpegError, ValueError) as e:
        raise MediaError(f"track {track!r}: no encoder {codec!r} in this FFmpeg build: {e}") from e
    try:
        configure(ctx)
        ctx.flags |= GLOBAL_HEADER
        ctx.options = dict(options)
        ctx.open()
    except (av.FFmpegError, ValueError, TypeError) as e:
        raise MediaError(f"track {track!r}: opening encoder {codec!r} with {dict(options)}: {e}") from e
    return ctx


class EncoderBase:
    """One open codec context for one track, with the counters the health report reads.

    Subclasses turn HAL samples into codec frames and codec packets into EncodedPackets.
    After :meth:`flush` the codec is drained and takes nothing more; :meth:`close` releases it
    without draining. Not thread-safe: one thread feeds one encoder.
    """

    def __init__(self, track: str, ctx: av.VideoCodecContext | av.AudioCodecContext, spec: TrackSpec) -> None:
        self._track = track
        self._ctx: av.VideoCodecContext | av.AudioCodecContext | None = ctx
        self._spec = spec
        self._flushed = False
        self._frames_in = 0
        self._packets_out = 0
        self._keyframes_out = 0
        self._bytes_out = 0
        self._encode_s = 0.0

    @property
    def spec(self) -> TrackSpec:
        """How a muxer declares this track; extradata is known as soon as the encoder is built."""
        return self._spec

    @property
    def track(self) -> str:
        return self._track

    def _context(self) -> av.VideoCodecContext | av.AudioCodecContext:
        if self._ctx is None:
            raise MediaError(f"track {self._track!r}: encoder is closed")
        if self._flushed:
            raise MediaError(f"track {self._track!r}: encoder was flushed and takes no more input")
        return self._ctx

    def _run(self, frame: av.VideoFrame | av.AudioFrame | None) -> list[av.Packet[Any]]:
        """Send ``frame`` (None drains) and return what the codec has ready; wraps codec errors."""
        ctx = self._context()
        started = time.perf_counter()
        try:
            if isinstance(ctx, av.VideoCodecContext):
                assert not isinstance(frame, av.AudioFrame)
                packets = ctx.encode(frame)
            else:
                assert not isinstance(frame, av.VideoFrame)
                packets = ctx.encode(frame)
        except av.FFmpegError as e:
            what = "draining" if frame is None else f"encoding input at pts {frame.pts}"
            raise MediaError(f"track {self._track!r}: {what}: {e}") from e
        finally:
            self._encode_s += time.perf_counter() - started
        if frame is None:
            self._flushed = True
        else:
            self._frames_in += 1
        return packets

    def _account(self, data: bytes, keyframe: bool) -> None:
        self._packets_out += 1
        self._bytes_out += len(data)
        self._keyframes_out += keyframe

    def close(self) -> None:
        """Release the codec without draining it; idempotent."""
        self._ctx = None

    def get_status(self) -> dict[str, object]:
        """Counters for the health report; ``encode_s`` is wall time spent inside the codec."""
        return {
            "track": self._track,
            "codec": self._spec.codec,
            "open": self._ctx is not None and not self._flushed,
            "inputs": self._frames_in,
            "packets_out": self._packets_out,
            "keyframes_out": self._keyframes_out,
            "bytes_out": self._bytes_out,
            "encode_s": round(self._encode_s, 6),
        }

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
