"""Renditions made in memory: what a cut segment still plays, the thermal palette, refusals."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest

from agent.evidence.decrypt import open_segment
from hq.rendition import DEFAULT_SPAN_CK, Piece, RenditionError, colour_map, thermal_rendition, video_rendition
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
