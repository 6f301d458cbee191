"""A court export with viewing copies of a real recording, for the viewing copy and browser tests."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from agent.evidence.keys import load_hq_private
from hq.cli import main as hq
from hq.index import SqliteIndex
from hq.storage import FileEvidenceStore
from tests.playback_util import Recording, record
from tests.playback_util import ingest as ingest_recording


def held_recording(tmp_path: Path, seconds: float) -> tuple[Path, Recording]:
    """A fresh headquarters (``tmp_path/H``) holding ``seconds`` of a real recording (camera,
    thermal, audio) sealed to its key, in case ``2026-7``."""
    data = tmp_path / "H"
    assert hq(["keygen", "--data-dir", str(data)]) == 0
    rec = record(tmp_path / "unit", seconds=seconds, hq_key=load_hq_private(data / "keys" / "hq.key"))  # type: ignore[arg-type]
    with SqliteIndex(data / "index.sqlite") as index:
        ingest_recording(index, FileEvidenceStore(data), data, rec, 1_790_000_000_000_000_000)
    assert hq(["case", "open", "2026-7", "--title", "t", "--data-dir", str(data)]) == 0
    assert hq(["case", "add", "2026-7", "--device-id", rec.device_id, "--recording", rec.recording_id,
               "--data-dir", str(data)]) == 0
    return data, rec


def export_case_of(data: Path, rec: Recording, out: Path, *extra: str) -> tuple[Path, str, str]:
    """``bodycam-hq export --case 2026-7`` into ``out``: the folder, the viewing copy's path stem
    inside it (``unit/viewing/<recording_id>``) and what the export printed."""
    said = io.StringIO()
    with contextlib.redirect_stdout(said):
        assert hq(["export", "--case", "2026-7", "--out", str(out), "--data-dir", str(data), *extra]) == 0
    return out, f"{rec.device_id}/viewing/{rec.recording_id}", said.getvalue()


def export_a_recording(tmp_path: Path, seconds: float) -> tuple[Path, str, str]:
    """A held recording exported with the keys folder's ``hq.key`` (``export_case_of``)."""
    data, rec = held_recording(tmp_path, seconds)
    return export_case_of(data, rec, tmp_path / "court")
