"""The bond between a court export's viewing copy and the plaintext a unit signed (docs/court-export.md).

A segment's plaintext (Matroska) holds the camera's H.264 packets as contiguous byte runs. Headquarters
cuts those runs out (``cut``): what is left, the *residue*, ships in the export beside the viewing
copy, with the runs' places (``holes``). ``rebuild`` puts the copy's packets back into the holes; if
the result hashes to the ``plaintext.sha256`` the unit signed, the copy's packets are, byte for byte
and in order, the ones the unit recorded, and the check needs no key: the residue alone shows no
picture. Pure functions over bytes, plus ``demux`` (PyAV) that lists a container's packets.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

# A Matroska SimpleBlock's payload starts after its track number (1 to 8 bytes), a 2-byte time code
# and a flags byte; the demuxer's packet position is the block's: the payload is found within this.
_BLOCK_HEAD_BYTES = 16


class CopyError(Exception):
    """A viewing copy or a segment's plaintext that cannot be cut, rebuilt or read; the message says why."""


@dataclass(frozen=True, slots=True)
class Track:
    """One track's packets in file order, and its codec's out-of-band set-up (H.264's avcC)."""

    codec: str
    extradata: bytes
    packets: list[bytes]
    positions: list[int]  # the demuxer's byte position of each packet (-1 if unknown)
    times_ms: list[int | None]  # each packet's presentation time in ms (None if it has none)
    tags: dict[str, str]  # the container's metadata, then the track's


def demux(source: bytes | Path, kind: str, fmt: str | None = None) -> Track | None:
    """The first track of ``kind`` (``camera``: a video track not FFV1; ``thermal``: FFV1;
    ``audio``) in ``source``, or None when there is none."""
    try:
        container: Any = av.open(io.BytesIO(source) if isinstance(source, bytes) else str(source), "r", format=fmt)
    except (av.error.FFmpegError, OSError) as exc:
        raise CopyError(f"does not open as media: {exc}") from exc
    with container:
        stream = next((s for s in container.streams if _kind(s) == kind), None)
        if stream is None:
            return None
        packets: list[bytes] = []
        positions: list[int] = []
        times: list[int | None] = []
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                packets.append(bytes(packet))
                positions.append(-1 if packet.pos is None else int(packet.pos))
                times.append(None if packet.pts is None else round(packet.pts * packet.time_base * 1000))
        except av.error.FFmpegError as exc:
            if not packets:
                raise CopyError(f"does not demux: {exc}") from exc
            # a segment salvaged after a power cut ends mid-cluster: what it holds is what counts
        return Track(stream.codec_context.name, bytes(stream.codec_context.extradata or b""), packets, positions,
                     times, {**dict(container.metadata), **dict(stream.metadata)})


def _kind(stream: Any) -> str | None:
    if stream.type == "audio":
        return "audio"
    if stream.type == "video":
        return "thermal" if stream.codec_context.name == "ffv1" else "camera"
    return None


def holes_of(plaintext: bytes, track: Track) -> list[tuple[int, int]]:
    """Where each of ``track``'s packets lies in ``plaintext`` (offset, length), in order."""
    holes: list[tuple[int, int]] = []
    end = 0
    for i, (data, pos) in enumerate(zip(track.packets, track.positions, strict=True)):
        start = max(pos, end)
        at = plaintext.find(data, start, start + _BLOCK_HEAD_BYTES + len(data))
        if at < 0:
            raise CopyError(f"packet {i} is not stored as one run in the segment (laced or compressed blocks)")
        holes.append((at, len(data)))
        end = at + len(data)
    return holes


def cut(plaintext: bytes, holes: list[tuple[int, int]]) -> bytes:
    """``plaintext`` without the byte runs ``holes`` (sorted, not overlapping)."""
    parts: list[bytes] = []
    end = 0
    for offset, length in holes:
        parts.append(plaintext[end:offset])
        end = offset + length
    parts.append(plaintext[end:])
    return b"".join(parts)


def rebuild(residue: bytes, holes: list[tuple[int, int]], packets: list[bytes]) -> bytes:
    """The plaintext ``cut`` was given, from its residue and the packets that filled ``holes``.
    Raises CopyError when the packets cannot fill the holes (another count or another length)."""
    if len(packets) != len(holes):
        raise CopyError(f"{len(packets)} packet(s) for {len(holes)} place(s)")
    parts: list[bytes] = []
    taken = 0  # bytes of the residue used so far
    end = 0  # the plaintext's length so far
    for i, ((offset, length), data) in enumerate(zip(holes, packets, strict=True)):
        if len(data) != length:
            raise CopyError(f"packet {i} is {len(data)} bytes, the recorded one {length}")
        gap = offset - end
        if gap < 0 or taken + gap > len(residue):
            raise CopyError(f"place {i} ({offset}) is out of order or past the residue")
        parts.append(residue[taken:taken + gap])
        parts.append(data)
        taken += gap
        end = offset + length
    parts.append(residue[taken:])
    return b"".join(parts)


def timecode(utc_ns: int, rate: Fraction) -> str:
    """SMPTE time of day ``HH:MM:SS:FF`` (UTC) at ``utc_ns``, frames counted at ``rate``: the
    viewing copy's ``tmcd`` start."""
    day_ns = utc_ns % 86_400_000_000_000
    seconds, rest_ns = divmod(day_ns, 1_000_000_000)
    fps = max(1, round(rate))
    frame = min(fps - 1, rest_ns * fps // 1_000_000_000)
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}:{frame:02d}"


def camera_rate(manifest: dict[str, Any]) -> Fraction:
    """The frame rate of the first video track a segment's signed manifest lists (30 if none says)."""
    for track in manifest.get("tracks") or ():
        if isinstance(track, dict) and track.get("kind") == "video":
            try:
                return Fraction(str((track.get("params") or {}).get("rate", "30/1")))
            except (ValueError, ZeroDivisionError):
                break
    return Fraction(30)


def offsets_ms(manifests: list[dict[str, Any]]) -> list[int]:
    """Where each segment starts on its recording's timeline, from the unit's signed times: by the
    monotonic clock within one boot (exact), by UTC across boots (as headquarters' playback)."""
    first = manifests[0]
    out = []
    for m in manifests:
        if m.get("boot_id") == first.get("boot_id"):
            ns = int(m["time"]["mono_start_ns"]) - int(first["time"]["mono_start_ns"])
        else:
            ns = int(m["time"]["utc_start_ns"]) - int(first["time"]["utc_start_ns"])
        out.append(ns // 1_000_000)
    return out
