"""Checking that decrypted media decodes and holds the frames its manifest claims (uses PyAV)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from agent.evidence.manifest import SignedManifest

# Error detection asked of every decoder (section 9.3 K5): verify slice CRCs (FFV1), check
# the bitstream and buffers strictly, and fail a packet on the first error instead of concealing it.
ERR_DETECT = "crccheck+bitstream+buffer+explode"


@contextmanager
def _libav_errors() -> Iterator[list[tuple[int, str, str]]]:
    """Collect what FFmpeg logs at level error or worse on this thread (it conceals many errors
    and only says so in its log). PyAV's log level is process-wide: it is restored afterwards."""
    import av.logging

    level, skip = av.logging.get_level(), av.logging.get_skip_repeated()
    av.logging.set_level(av.logging.ERROR)
    av.logging.set_skip_repeated(False)  # one file's error must not hide the next file's same one
    try:
        with av.logging.Capture(local=True) as logs:
            yield logs
    finally:
        av.logging.set_skip_repeated(skip)
        av.logging.set_level(level)


def count_frames(media: bytes) -> tuple[list[dict[str, Any]], str | None]:
    """Decode every stream; per stream in container order: codec, kind and frames decoded.

    Decoding goes on past a bad packet; the first decoding error (section 9.3 K5: an error
    returned by the demuxer or a decoder, a frame flagged corrupt, or an error FFmpeg logs
    while concealing it) is returned beside the counts. Decoders run on this thread only, so
    that what they log is attributed to this file.
    """
    import av  # imported here: verifying without --hq-key needs no media library

    streams: list[dict[str, Any]] = []
    error: str | None = None
    with _libav_errors() as logged:
        try:
            with av.open(io.BytesIO(media), "r") as container:
                for st in container.streams:
                    streams.append({"codec": st.codec_context.name, "kind": st.type, "frames": 0})
                    st.codec_context.options = {"err_detect": ERR_DETECT}
                    st.codec_context.thread_count = 1
                for packet in container.demux():
                    if packet.stream.index >= len(streams):
                        continue
                    entry = streams[packet.stream.index]
                    try:
                        for frame in packet.decode():
                            entry["frames"] += frame.samples if packet.stream.type == "audio" else 1  # type: ignore[union-attr]
                            if getattr(frame, "is_corrupt", False) and error is None:
                                error = f"stream {packet.stream.index}: a decoded frame is flagged corrupt"
                    except Exception as exc:  # PyAV raises many error types; keep counting the rest
                        error = error or f"{type(exc).__name__}: {exc}"
        except Exception as exc:
            error = error or f"{type(exc).__name__}: {exc}"
    if error is None and logged:
        _level, name, message = logged[0]
        error = f"{name or 'libav'} reports: {message.strip()}"
    return streams, error


def check_media(media: bytes, signed: SignedManifest) -> list[str]:
    """Problems found when decoding ``media`` against the manifest's tracks (empty: all good)."""
    m = signed.manifest
    if m.get("container") != "matroska":
        return []  # not media this checker knows; the plaintext hash already held
    found, error = count_frames(media)
    if "recovered" in m["flags"]:
        # a salvaged segment ends mid-cluster and its frame counts were never known to the device
        return [] if any(s["frames"] for s in found) else [f"salvaged media holds no decodable frame ({error})"]
    if error is not None:
        return [f"media does not decode: {error}"]
    tracks = m.get("tracks", [])
    if len(found) != len(tracks):
        return [f"container has {len(found)} tracks, the manifest lists {len(tracks)}"]
    problems = []
    for track, got in zip(tracks, found, strict=True):
        name, want, have = track["name"], track["frames"], got["frames"]
        if track["kind"] == "audio":
            # Audio frames are samples; codecs pad and trim at the edges, so only emptiness is an error.
            if want and not have:
                problems.append(f"track {name}: no audio decodes, the manifest says {want} samples")
        elif have != want:
            problems.append(f"track {name}: {have} frames decode, the manifest says {want}")
    return problems
