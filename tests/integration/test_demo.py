"""`make run`'s demo: Ctrl-C stops it cleanly in one line, and running it again resumes and exports afresh."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.integration.agent_util import BIN, verify_json

REPO = Path(__file__).resolve().parents[2]


def demo(data: Path, script: str, interrupt_on: str | None = None) -> tuple[int, list[str]]:
    """Run scripts/demo.py; with ``interrupt_on``, Ctrl-C it (SIGINT to its process group, as a
    terminal does) once a line containing that text is printed."""
    proc = subprocess.Popen(
        [str(BIN / "python"), str(REPO / "scripts" / "demo.py"), "--data-dir", str(data), "--script", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=REPO,
        start_new_session=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            lines.append(raw.decode(errors="replace").rstrip("\n"))
            if interrupt_on is not None and interrupt_on in lines[-1]:
                os.killpg(proc.pid, signal.SIGINT)
                interrupt_on = None
        return proc.wait(120), lines
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_ctrl_c_says_where_things_stand_and_a_rerun_resumes_and_exports_afresh(tmp_path: Path) -> None:
    data = tmp_path / "run-data"
    code, lines = demo(data, "2:record,60:record", interrupt_on="RECORDING (")
    text = "\n".join(lines)
    assert code == 130, text
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    assert lines[-1].startswith("interrupted while recording: the unit is stopped with "), text
    assert lines[-1].endswith("Re-run `make run` to resume."), text
    assert not (data / "unit" / "ctl.sock").exists(), "the agent did not stop"

    # what an earlier run left in the export folder must not pass for this run's export
    stale = data / "export"
    stale.mkdir()
    (stale / "0000000000.bcs").write_bytes(b"from an earlier run")

    code, lines = demo(data, "2:record,4:mark,6:record")
    text = "\n".join(lines)
    assert code == 0, text
    assert any(line.endswith(f"exported to {stale}, replacing the last run's export") for line in lines), text
    exported = verify_json(stale)
    on_unit = verify_json(data / "unit")
    assert exported["_exit"] == 0 and on_unit["_exit"] == 0, (exported, on_unit)
    # the export holds both runs: the interrupted one's entries went up first, then this run's
    assert exported["segments"] >= 2 and not (data / "export.new").exists()
    assert exported["last_seq"] == on_unit["last_seq"] - 1  # all but the final shutdown


def test_the_demo_refuses_a_bad_script_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo.py"), "--data-dir", str(tmp_path), "--script", "soon:record"],
        capture_output=True, text=True, cwd=REPO, check=False,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "'soon' is not a number of seconds" in done.stderr
