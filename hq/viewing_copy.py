"""Viewing copies in a case's court export (docs/court-export.md, "Viewing copies").

Per recording, in ``<device_id>/viewing/``: ``<recording_id>.mp4`` in the NISTIR 8161 shape (the
camera's H.264 packets remuxed as recorded, no re-encode; the audio as recorded; a ``tmcd`` time
code track at the recorded UTC start of day; per-sample times on the recording's timeline; the
recorded UTC start, the clock's source, uncertainty and GNSS offset in the file's metadata), the
thermal track as recorded (``.thermal.mkv``: the radiometric FFV1 packets, lossless) and
colour-mapped (``.thermal.mp4``), ``<recording_id>.json`` (the copy's record) and, per segment,
``residue/<seq>.bin``: the plaintext with the copy's H.264 packets cut out
(:mod:`agent.evidence.viewcopy`), so ``bodycam verify`` can prove offline that the copy's packets
are the ones the unit signed.

The plaintext comes from a ``Decrypter`` (the decrypt component, or ``hq.key`` on the exporting
machine: ``KeyDecrypter``) and lives in memory one segment at a time.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO

import av

from agent.evidence.decrypt import DecryptError, open_sealed_metadata, open_stream
from agent.evidence.keys import HqPrivateKey
from agent.evidence.viewcopy import CopyError, Track, camera_rate, cut, demux, holes_of, timecode
from hq.rendition import DEFAULT_SPAN_CK, colour_picture, thermal_encoder

FORMAT = "bodycam-viewing-copy-v1"
VIEWING = "viewing"


class ViewingCopyError(Exception):
    """A viewing copy that cannot be made; the message names the segment and why."""


@dataclass(frozen=True, slots=True)
class CopySegment:
    """One segment of the recording: where it sits on the timeline and what the unit signed of it."""

    seq: int
    offset_ms: int
    manifest: dict[str, Any]
    manifest_sha256: str


class KeyDecrypter:
    """Decrypts with headquarters' private key on this machine (``bodycam-hq export --case`` run where
    ``hq.key`` is); the same calls as the decrypt component's client."""

    def __init__(self, key: HqPrivateKey) -> None:
        self._key = key

    def segment(self, source: BinaryIO, length: int, *, device_id: str, seq: int, plaintext_sha256: str | None,
                recovered: bool = False) -> bytes:
        parts: list[bytes] = []
        try:
            opened = open_stream(source, self._key, parts.append, recovered=recovered)
        except DecryptError as exc:
            raise ViewingCopyError(f"{device_id} seq {seq}: {exc}") from exc
        if opened.problems:
            raise ViewingCopyError(f"{device_id} seq {seq}: {'; '.join(opened.problems)}")
        if plaintext_sha256 is not None and opened.plaintext_sha256 != plaintext_sha256:
            raise ViewingCopyError(f"{device_id} seq {seq}: the plaintext is not the one the unit signed")
        return b"".join(parts)

    def metadata(self, device_id: str, seq: int, sealed: str) -> dict[str, Any]:
        try:
            return open_sealed_metadata(device_id, seq, sealed, self._key)
        except DecryptError as exc:
            raise ViewingCopyError(f"{device_id} seq {seq}: {exc}") from exc


def _iso(ns: int) -> str:
    return datetime.datetime.fromtimestamp(ns / 1e9, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _clock(manifest: dict[str, Any]) -> dict[str, Any]:
    t = manifest["time"]
    return {"utc_start": _iso(int(t["utc_start_ns"])), "source": t.get("source"), "synced": t.get("synced"),
            "uncertainty_ns": t.get("uncertainty_ns"), "gnss_offset_ns": t.get("gnss_offset_ns")}


@dataclass
class _Outputs:
    """The open muxers of one recording's copies, made when the first segment shows its tracks."""

    folder: Path
    stem: str
    meta: dict[str, str]
    tc: str
    video: Any = None
    thermal: Any = None
    colour: Any = None
    streams: dict[str, Any] = field(default_factory=dict)
    encoder: Any = None
    packets: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # this segment's packets copied, per track kind

    def open_video(self, camera: Any, audio: Any) -> None:
        self.video = av.open(str(self.folder / f"{self.stem}.mp4"), "w", format="mp4",
                             options={"movflags": "+faststart+use_metadata_tags", "write_tmcd": "1"})
        self.video.metadata.update(self.meta)
        self.streams["camera"] = self.video.add_stream_from_template(camera)
        self.streams["camera"].metadata["timecode"] = self.tc
        if audio is not None:
            self.streams["audio"] = self.video.add_stream_from_template(audio)

    def open_thermal(self, thermal: Any) -> None:
        self.thermal = av.open(str(self.folder / f"{self.stem}.thermal.mkv"), "w", format="matroska")
        self.thermal.metadata.update({**self.meta, "comment": "bodycam thermal track as recorded: radiometric "
                                      "centikelvin, FFV1 gray16le, lossless"})
        self.streams["thermal"] = self.thermal.add_stream_from_template(thermal)

    def colour_frame(self, frame: Any, at_ms: int) -> None:
        if self.colour is None:
            self.colour = av.open(str(self.folder / f"{self.stem}.thermal.mp4"), "w", format="mp4",
                                  options={"movflags": "+faststart+use_metadata_tags"})
            self.colour.metadata.update({**self.meta, "comment": "bodycam thermal track, colour-mapped (iron "
                                         f"palette over {DEFAULT_SPAN_CK[0]}..{DEFAULT_SPAN_CK[1]} cK)"})
            self.encoder = thermal_encoder(self.colour, frame, {"preset": "veryfast", "crf": "18"})
        for packet in self.encoder.encode(colour_picture(frame, at_ms, self.encoder)):
            self.colour.mux(packet)

    def close(self) -> None:
        if self.colour is not None:
            for packet in self.encoder.encode():
                self.colour.mux(packet)
        for out in (self.video, self.thermal, self.colour):
            if out is not None:
                out.close()


def _streams(container: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for s in container.streams:
        kind = "audio" if s.type == "audio" else ("thermal" if s.codec_context.name == "ffv1" else "camera")
        if s.type in ("audio", "video"):
            found.setdefault(kind, s)
    return found


def _mux_segment(outs: _Outputs, seg: CopySegment, media: bytes) -> None:
    outs.counts = {"camera": 0, "audio": 0, "thermal": 0}
    try:
        src: Any = av.open(io.BytesIO(media), "r", format="matroska")
    except av.error.FFmpegError as exc:
        raise ViewingCopyError(f"seq {seg.seq}: the decrypted media does not open: {exc}") from exc
    with src:
        streams = _streams(src)
        if outs.video is None and "camera" in streams:
            outs.open_video(streams["camera"], streams.get("audio"))
        if outs.thermal is None and "thermal" in streams:
            outs.open_thermal(streams["thermal"])
        wanted = {s.index: k for k, s in streams.items() if k in outs.streams}
        try:
            for packet in src.demux(*[streams[k] for k in wanted.values()]):
                if packet.size == 0 or packet.pts is None:
                    continue
                kind = wanted[packet.stream.index]
                shift = round(Fraction(seg.offset_ms, 1000) / packet.time_base)
                if kind == "thermal":
                    for frame in packet.decode():
                        outs.colour_frame(frame, seg.offset_ms + round(frame.pts * frame.time_base * 1000))
                packet.pts += shift
                if packet.dts is not None:
                    packet.dts += shift
                packet.stream = outs.streams[kind]
                (outs.thermal if kind == "thermal" else outs.video).mux(packet)
                outs.packets += kind == "camera"
                outs.counts[kind] += 1
        except av.error.FFmpegError as exc:
            raise ViewingCopyError(f"seq {seg.seq}: the decrypted media does not remux: {exc}") from exc


def write_copies(folder: Path, device_id: str, recording_id: str, segments: list[CopySegment],
                 plaintext: Callable[[CopySegment], bytes]) -> dict[str, Any] | None:
    """Write one recording's viewing copies into ``folder`` (made if need be) and return the copy's
    record (also written as ``<recording_id>.json``); None when no segment holds a camera track."""
    if not segments:
        return None
    first = segments[0].manifest
    start_ns = int(first["time"]["utc_start_ns"])
    clock = _clock(first)
    tc = timecode(start_ns, camera_rate(first))
    meta = {"creation_time": _iso(start_ns), "title": f"{device_id} recording {recording_id}",
            "comment": "bodycam viewing copy: the unit's H.264 packets as recorded (docs/court-export.md)",
            "com.bodycam.device_id": device_id, "com.bodycam.recording_id": recording_id,
            "com.bodycam.utc_start": clock["utc_start"], "com.bodycam.clock_source": str(clock["source"]),
            "com.bodycam.clock_uncertainty_ns": str(clock["uncertainty_ns"]),
            "com.bodycam.clock_gnss_offset_ns": str(clock["gnss_offset_ns"])}
    (folder / "residue").mkdir(parents=True, exist_ok=True)
    outs = _Outputs(folder, recording_id, meta, tc)
    rows: list[dict[str, Any]] = []
    try:
        for seg in segments:
            media = plaintext(seg)
            try:
                camera: Track | None = demux(media, "camera", "matroska")
                holes = holes_of(media, camera) if camera is not None else []
            except CopyError as exc:
                raise ViewingCopyError(f"seq {seg.seq}: {exc}") from exc
            before = outs.packets
            _mux_segment(outs, seg, media)
            if outs.packets - before != len(holes):
                raise ViewingCopyError(f"seq {seg.seq}: {outs.packets - before} H.264 packets copied of "
                                       f"{len(holes)} recorded")
            residue = f"residue/{seg.seq:010d}.bin"
            (folder / residue).write_bytes(cut(media, holes))
            plain = seg.manifest.get("plaintext")
            rows.append({"seq": seg.seq, "manifest_sha256": seg.manifest_sha256, "offset_ms": seg.offset_ms,
                         "plaintext_sha256": plain["sha256"] if isinstance(plain, dict) else None,
                         "decrypted_sha256": hashlib.sha256(media).hexdigest(),
                         "residue": residue, "camera_packets": len(holes), "holes": [list(h) for h in holes],
                         "audio_packets": outs.counts["audio"], "thermal_packets": outs.counts["thermal"],
                         "clock": _clock(seg.manifest)})
    finally:
        outs.close()
    if outs.video is None:  # no camera in any segment: no copy, and nothing of one left behind
        for row in rows:
            (folder / row["residue"]).unlink(missing_ok=True)
        for name in (f"{recording_id}.thermal.mkv", f"{recording_id}.thermal.mp4"):
            (folder / name).unlink(missing_ok=True)
        return None
    record = {
        "format": FORMAT, "device_id": device_id, "recording_id": recording_id,
        "video": f"{recording_id}.mp4",
        "thermal": None if outs.thermal is None else {"lossless": f"{recording_id}.thermal.mkv",
                                                      "colour_mapped": f"{recording_id}.thermal.mp4",
                                                      "palette": "iron", "span_ck": list(DEFAULT_SPAN_CK)},
        "timecode": tc, "clock": clock, "camera_packets": outs.packets, "segments": rows,
    }
    (folder / f"{recording_id}.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    return record
