"""``bodycam-hq category``, ``case`` and ``lifecycle`` on the embedded default (SQLite, files):
what they print, what they refuse in one line, and the audit and custody records they leave."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from hq.cli import main
from hq.index import SqliteIndex
from hq.lifecycle_index import SqlLifecycle
from hq.records import Evidence
from hq.storage import FileEvidenceStore
from tests.evidence_util import ChainBuilder


def held_recording(tmp_path: Path) -> str:
    """A data dir with keys, unit-9 enrolled and one stored entry of recording rec-1."""
    data = tmp_path / "H"
    unit = ChainBuilder(tmp_path / "unit", device_id="unit-9")
    pub = unit.write_device_pub(tmp_path / "device.pub")
    assert main(["keygen", "--data-dir", str(data)]) == 0
    assert main(["enroll", "--data-dir", str(data), "--device-id", "unit-9", "--device-pub", str(pub)]) == 0
    location = FileEvidenceStore(data).put("unit-9", 0, unit.segment())
    now = time.time_ns()
    with SqliteIndex(data / "index.sqlite") as index:
        index.add_evidence(Evidence("unit-9", 0, "segment", "11" * 32, "00" * 32, "22" * 32, 10, now, now + 1, now,
                                    "verified", location, "a" * 32, recording_id="rec-1"))
    return str(data)


def test_a_supervisor_categorises_holds_queues_and_restores(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = held_recording(tmp_path)
    rec = ["--device-id", "unit-9", "--recording", "rec-1"]
    capsys.readouterr()
    assert main(["category", "set", "shift-review", "--retention", "30d", "--data-dir", data]) == 0
    assert "category shift-review added: kept 30d" in capsys.readouterr().out
    assert main(["category", "assign", "arrest", *rec, "--data-dir", data]) == 0
    assert main(["case", "open", "2026-0042", "--title", "burglary", "--data-dir", data]) == 0
    assert main(["case", "add", "2026-0042", *rec, "--data-dir", data]) == 0
    assert "on legal hold (index; set in the store)" in capsys.readouterr().out
    assert [p.name for p in (Path(data) / "evidence" / "unit-9").glob("*.hold")] == ["0000000000.bcs.hold"]
    assert main(["lifecycle", "delete", *rec, "--reason", "mistake", "--data-dir", data]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "on legal hold" in err[0]
    assert main(["case", "close", "2026-0042", "--data-dir", data]) == 0
    assert main(["lifecycle", "delete", *rec, "--reason", "mistake", "--data-dir", data]) == 0
    assert "deleted in 7 days unless restored" in capsys.readouterr().out
    assert main(["lifecycle", "list", "--state", "queued", "--json", "--data-dir", data]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(r["recording_id"], r["categories"], r["held"]) for r in listed] == [("rec-1", ["arrest"], False)]
    assert main(["lifecycle", "restore", *rec, "--data-dir", data]) == 0
    assert main(["lifecycle", "restore", *rec, "--data-dir", data]) == 1  # not in the queue any more
    assert main(["lifecycle", "run", "--data-dir", data]) == 0
    assert "deleted 0" in capsys.readouterr().out
    assert main(["lifecycle", "verify", "--data-dir", data]) == 0
    assert "chain intact" in capsys.readouterr().out
    with SqliteIndex(Path(data) / "index.sqlite") as index:
        custody = [r.event_type for r in SqlLifecycle(index).custody_log("unit-9/rec-1")]
        audited = {a.event_type for a in index.audit_log()}
    assert custody == ["category-assign", "hold", "deletion-request", "release", "deletion-request", "restore"]
    assert {"category-set", "case-open", "case-close", "store-hold", "hold", "restore"} <= audited


@pytest.mark.parametrize(("argv", "says"), [
    (["category", "set", "Bad Name", "--retention", "1d"], "category 'Bad Name'"),
    (["category", "assign", "nonesuch", "--device-id", "unit-9", "--recording", "rec-1"], "no category 'nonesuch'"),
    (["case", "add", "nope", "--device-id", "unit-9", "--recording", "rec-1"], "case 'nope' is unknown"),
    (["lifecycle", "delete", "--device-id", "unit-9", "--recording", "rec-2", "--reason", "x"], "no recording"),
])
def test_refusals_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], says: str) -> None:
    data = held_recording(tmp_path)
    capsys.readouterr()
    assert main([*argv, "--data-dir", data]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err
