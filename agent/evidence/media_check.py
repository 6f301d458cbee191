"""Checking that decrypted media decodes and holds the frames its manifest claims (uses PyAV)."""

from __future__ import annotations

import io
from typing import Any

from agent.evidence.manifest import SignedManifest


def count_frames(media: bytes) -> list[dict[str, Any]]:
    """Decode every stream fully; per stream in container order: codec, kind and frames decoded."""
    import av  # imported here: verifying without --hq-key needs no media library

    streams: list[dict[str, Any]] = []
    with av.open(io.BytesIO(media), "r") as container:
        for st in container.streams:
            streams.append({"codec": st.codec_context.name, "kind": st.type, "frames": 0})
        for packet in container.demux():
            if packet.stream.index >= len(streams):
                continue
            for frame in packet.decode():
                entry = streams[packet.stream.index]
                entry["frames"] += frame.samples if packet.stream.type == "audio" else 1  # type: ignore[union-attr]
    return streams


def check_media(media: bytes, signed: SignedManifest) -> list[str]:
    """Problems found when decoding ``media`` against the manifest's tracks (empty: all good)."""
    tracks = signed.manifest.get("tracks", [])
    try:
        found = count_frames(media)
    except Exception as exc:  # PyAV raises many error types; any of them means "does not decode"
        if "recovered" in signed.manifest["flags"] and media:
            return []  # a salvaged segment ends mid-cluster; decoders stop there, which is expected
        return [f"media does not decode: {exc}"]
    if "recovered" in signed.manifest["flags"]:
        # frame counts of a salvaged segment were never known to the device: it must just decode
        return [] if any(s["frames"] for s in found) else ["salvaged media holds no decodable frame"]
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
