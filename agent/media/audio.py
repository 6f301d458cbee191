"""Continuous audio encoder (Opus or AAC) timed on the host monotonic clock."""

from __future__ import annotations

import logging
from collections import deque
from fractions import Fraction
from typing import Any

import av
import av.codec.codec
import av.codec.context
import numpy as np
import numpy.typing as npt

from hal.audio import AudioChunk

from .codec import NS_PER_S, EncoderBase, open_encoder
from .packets import EncodedPacket, MediaError, TrackSpec

log = logging.getLogger(__name__)

_CODEC_ALIASES = {"opus": "libopus"}
_LAYOUTS = {1: "mono", 2: "stereo"}


class AudioEncoder(EncoderBase):
    """Encodes microphone chunks of any length into the codec's fixed frames (Opus: 960 samples
    at 48 kHz, AAC: 1024), buffering the remainder.

    Timing: every chunk leaves an anchor (its first sample's position in the encoded stream,
    its ``mono_ns``). A packet's ``pts_ns`` is the anchor of the chunk holding its first sample
    plus the sample offset, so clock drift between the audio device and the host never
    accumulates and a driver overrun shows as a gap. The codec's priming delay makes the
    first packet start a few milliseconds before the first sample, as the decoder expects.
    Every packet is a keyframe. Not thread-safe: one thread feeds one encoder.
    """

    def __init__(self, track: str, sample_rate_hz: int = 48000, channels: int = 1,
                 codec: str = "libopus", bitrate_bps: int = 64000) -> None:
        if sample_rate_hz <= 0 or channels <= 0 or bitrate_bps <= 0:
            raise ValueError(f"track {track!r}: sample rate, channels and bitrate must be positive")
        codec = _CODEC_ALIASES.get(codec, codec)
        layout = _LAYOUTS.get(channels, f"{channels}c")
        try:
            formats = [f.name for f in av.codec.Codec(codec, "w").audio_formats or ()]
        except (av.FFmpegError, ValueError) as e:
            raise MediaError(f"track {track!r}: no audio encoder {codec!r}: {e}") from e
        # Packed int16 goes straight in; otherwise convert to the codec's float layout.
        sample_format = next((f for f in ("s16", "fltp", "flt") if f in formats), None)
        if sample_format is None:
            raise MediaError(f"track {track!r}: {codec!r} takes none of s16/fltp/flt (it takes {formats})")

        def configure(ctx: av.codec.context.CodecContext) -> None:
            assert isinstance(ctx, av.AudioCodecContext)
            ctx.sample_rate = sample_rate_hz
            ctx.layout = layout
            ctx.format = sample_format
            ctx.bit_rate = bitrate_bps
            ctx.time_base = Fraction(1, sample_rate_hz)

        ctx = open_encoder(track, codec, {}, configure)
        assert isinstance(ctx, av.AudioCodecContext)
        spec = TrackSpec(
            name=track,
            kind="audio",
            codec=ctx.codec.canonical_name,
            width=None,
            height=None,
            pixel_format=None,
            sample_rate_hz=sample_rate_hz,
            channels=channels,
            rate_num=sample_rate_hz,
            rate_den=1,
            extradata=_midstream_header(ctx.extradata),
            bitrate_bps=bitrate_bps,
        )
        super().__init__(track, ctx, spec)
        self._rate_hz = sample_rate_hz
        self._channels = channels
        self._layout = layout
        self._sample_format = sample_format
        self._frame_size = ctx.frame_size or sample_rate_hz // 50
        caps = ctx.codec.capabilities
        self._small_last_frame = bool(caps & av.codec.codec.Capabilities.small_last_frame)
        self._pending: npt.NDArray[np.int16] = np.empty((0, channels), np.int16)
        self._pending_pos = 0  # stream position of the first pending sample
        self._anchors: deque[tuple[int, int]] = deque()  # (stream position, mono_ns)
        self._last_pts_ns: int | None = None
        self._samples_dropped = 0
        log.info("track %r: %s %d Hz %s %d bps, %d-sample frames", track, codec, sample_rate_hz,
                 layout, bitrate_bps, self._frame_size)

    def encode(self, chunk: AudioChunk) -> list[EncodedPacket]:
        """Queue one chunk and encode every full codec frame now available.

        Raises MediaError if the chunk's rate, channel count or sample type differ from the
        encoder's, or the codec fails.
        """
        self._context()
        samples = chunk.samples
        if (chunk.sample_rate_hz != self._rate_hz or chunk.channels != self._channels
                or samples.dtype != np.int16 or samples.ndim != 2 or samples.shape[1] != self._channels):
            raise MediaError(
                f"track {self._track!r}: chunk {chunk.index} is {chunk.sample_rate_hz} Hz x {chunk.channels} "
                f"{samples.dtype}{samples.shape}, encoder takes {self._rate_hz} Hz x {self._channels} int16"
            )
        if chunk.dropped_before:
            self._samples_dropped += chunk.dropped_before
            log.debug("track %r: %d samples lost before chunk %d", self._track, chunk.dropped_before,
                      chunk.index)
        if not len(samples):
            return []
        self._anchors.append((self._pending_pos + len(self._pending), chunk.mono_ns))
        pending = np.concatenate((self._pending, samples)) if len(self._pending) else samples
        full = len(pending) - len(pending) % self._frame_size
        packets: list[EncodedPacket] = []
        for start in range(0, full, self._frame_size):
            packets += self._encode_block(pending[start:start + self._frame_size])
        self._pending = pending[full:]
        return packets

    def flush(self) -> list[EncodedPacket]:
        """Encode what is buffered (the last frame short or zero-padded) and drain the codec.

        Afterwards the encoder takes nothing more. Idempotent.
        """
        if self._ctx is None or self._flushed:
            return []
        packets: list[EncodedPacket] = []
        if len(self._pending):
            block = self._pending
            if not self._small_last_frame:
                block = np.concatenate((block, np.zeros((self._frame_size - len(block), self._channels),
                                                       np.int16)))
            packets += self._encode_block(block)
            self._pending = self._pending[:0]
        packets += [self._to_packet(p) for p in self._run(None)]
        return packets

    def _encode_block(self, block: npt.NDArray[np.int16]) -> list[EncodedPacket]:
        frame = self._to_frame(block)
        frame.pts = self._pending_pos
        frame.sample_rate = self._rate_hz
        frame.time_base = Fraction(1, self._rate_hz)
        self._pending_pos += len(block)
        return [self._to_packet(p) for p in self._run(frame)]

    def _to_frame(self, block: npt.NDArray[np.int16]) -> av.AudioFrame:
        if self._sample_format == "s16":
            return av.AudioFrame.from_ndarray(np.ascontiguousarray(block).reshape(1, -1), format="s16",
                                              layout=self._layout)
        scaled = block.astype(np.float32) * np.float32(1 / 32768)
        if self._sample_format == "fltp":
            return av.AudioFrame.from_ndarray(np.ascontiguousarray(scaled.T), format="fltp",
                                              layout=self._layout)
        return av.AudioFrame.from_ndarray(scaled.reshape(1, -1), format="flt", layout=self._layout)

    def _mono_at(self, position: int) -> int:
        """Monotonic time of stream sample ``position`` (negative: before the first sample)."""
        anchors = self._anchors
        if not anchors:
            raise MediaError(f"track {self._track!r}: codec returned audio before any chunk came in")
        while len(anchors) > 1 and anchors[1][0] <= position:
            anchors.popleft()
        anchor_pos, anchor_ns = anchors[0]
        return anchor_ns + (position - anchor_pos) * NS_PER_S // self._rate_hz

    def _to_packet(self, packet: av.Packet[Any]) -> EncodedPacket:
        position = packet.pts if packet.pts is not None else self._pending_pos
        samples = packet.duration or self._frame_size
        pts_ns = self._mono_at(position)
        if self._last_pts_ns is not None and pts_ns <= self._last_pts_ns:
            # Chunk timestamps jitter; never let a packet go back in time.
            pts_ns = self._last_pts_ns + 1
        self._last_pts_ns = pts_ns
        data = bytes(packet)
        self._account(data, True)
        return EncodedPacket(self._track, pts_ns, pts_ns, samples * NS_PER_S // self._rate_hz, True,
                             data, samples)

    def close(self) -> None:
        super().close()
        self._pending = self._pending[:0]
        self._anchors.clear()

    def get_status(self) -> dict[str, object]:
        status = super().get_status()
        status["samples_dropped"] = self._samples_dropped
        status["samples_pending"] = len(self._pending)
        return status


def _midstream_header(extradata: bytes | None) -> bytes | None:
    """OpusHead with pre-skip 0: segments begin mid-stream, long after the encoder's priming.

    With the encoder's own pre-skip (312 samples), every segment's decoder would drop the
    first 6.5 ms of its audio, leaving a hole at each segment boundary.
    """
    if extradata is None or not extradata.startswith(b"OpusHead") or len(extradata) < 12:
        return extradata
    return extradata[:10] + b"\x00\x00" + extradata[12:]
