"""Renditions made in memory: what a cut segment still plays, the thermal palette, refusals, and
what a player learns before the first byte (where time 0 lies, the codecs)."""

from __future__ import annotations

import io
import re
from pathlib import Path

import av
import numpy as np
import pytest

from agent.evidence.decrypt import open_segment
from hq.rendition import (
    DEFAULT_SPAN_CK,
    Piece,
    RenditionError,
    StreamInfo,
    codec_string,
    colour_map,
    thermal_rendition,
    video_rendition,
)
from tests.evidence_util import matroska
from tests.playback_util import Recording, record


@pytest.fixture(scope="module")
def pieces(tmp_path_factory: pytest.TempPathFactory) -> list[Piece]:
    rec: Recording = record(tmp_path_factory.mktemp("unit"), seconds=4.0, segment_s=2.0)
    out = []
    for path, m in zip(rec.files, rec.manifests, strict=True):
        if m["type"] == "segment":
            buf = io.BytesIO()
            open_segment(Path(path), rec.hq_key, buf.write)
            out.append(Piece(m["seq"], buf.getvalue(), len(out) * 2000))
    return out


def _video_frames(mp4: bytes) -> int:
    with av.open(io.BytesIO(mp4)) as c:
        return sum(1 for _ in c.decode(video=0))


def test_a_segment_cut_short_plays_what_it_holds(pieces: list[Piece]) -> None:
    whole = _video_frames(b"".join(video_rendition(pieces)))
    cut = Piece(pieces[1].seq, pieces[1].media[: len(pieces[1].media) * 6 // 10], pieces[1].offset_ms)
    partial = _video_frames(b"".join(video_rendition([pieces[0], cut])))
    assert whole == 40 and 20 < partial < 40


def test_a_segment_without_the_camera_is_skipped(pieces: list[Piece]) -> None:
    thermal_only = Piece(99, matroska("ffv1", 3), pieces[-1].offset_ms + 2000)
    assert _video_frames(b"".join(video_rendition([*pieces, thermal_only]))) == 40


def test_media_without_a_camera_or_nothing_at_all_is_refused() -> None:
    with pytest.raises(RenditionError, match="no camera track"):
        b"".join(video_rendition([Piece(7, matroska("ffv1", 3), 0)]))
    with pytest.raises(RenditionError, match="no camera track"):
        b"".join(video_rendition([]))
    with pytest.raises(RenditionError, match="seq 8: the decrypted media does not open"):
        b"".join(thermal_rendition([Piece(8, b"not matroska at all", 0)]))


def test_the_palette_goes_from_black_to_white_through_the_span() -> None:
    lo, hi = DEFAULT_SPAN_CK
    ramp = np.linspace(lo - 500, hi + 500, 64).astype(np.uint16).reshape(1, 64)
    rgb = colour_map(ramp).astype(int)
    assert rgb[0, 0].tolist() == [0, 0, 0] and rgb[0, -1].tolist() == [255, 255, 255]  # clipped beyond the span
    brightness = rgb[0].sum(axis=1)
    assert all(b2 >= b1 for b1, b2 in zip(brightness, brightness[1:], strict=False))  # hotter is never darker
    assert colour_map(np.full((2, 2), lo, np.uint16)).shape == (2, 2, 3)


def test_a_rendition_says_where_its_time_zero_lies_and_its_codecs(pieces: list[Piece]) -> None:
    # the first keyframe of the second segment, as the camera's packets place it on the timeline
    with av.open(io.BytesIO(pieces[1].media), format="matroska") as src:
        key = next(p for p in src.demux(src.streams.video[0]) if p.is_keyframe and p.pts is not None)
        first_key_ms = pieces[1].offset_ms + round(key.pts * key.time_base * 1000)
    info = StreamInfo()
    stream = video_rendition(pieces[1:], info=info)
    assert info.start_ms is None  # nothing made yet
    next(stream)
    assert info.start_ms == first_key_ms and info.start_ms >= pieces[1].offset_ms
    assert re.fullmatch(r"avc1\.[0-9a-f]{6},opus", info.codecs), info.codecs
    thermal = StreamInfo()
    next(thermal_rendition(pieces[1:], info=thermal))
    assert thermal.start_ms is not None and abs(thermal.start_ms - pieces[1].offset_ms) < 200
    assert re.fullmatch(r"avc1\.[0-9a-f]{6}", thermal.codecs), thermal.codecs


class _Codec:
    def __init__(self, name: str, extradata: bytes | None) -> None:
        self.name, self.extradata = name, extradata


def test_the_codec_string_comes_from_the_parameter_set() -> None:
    assert codec_string(_Codec("h264", bytes([1, 0x64, 0x00, 0x1F, 0xFF]))) == "avc1.64001f"  # avcC
    annex_b = b"\x00\x00\x00\x01\x67\x42\xc0\x1e\x95" + b"\x00\x00\x00\x01\x68\xce"
    assert codec_string(_Codec("libx264", annex_b)) == "avc1.42c01e"  # the SPS, found after its start code
    assert codec_string(_Codec("h264", b"\x00\x00\x01\x68\xce")) == ""  # no SPS: unknown, the player says so
    assert codec_string(_Codec("opus", None)) == "opus" and codec_string(_Codec("aac", None)) == "mp4a.40.2"
    assert codec_string(_Codec("pcm_s16le", None)) == ""
