"""`make run`'s demo: Ctrl-C stops it cleanly in one line, running it again resumes and exports afresh,
and with a terminal (``--stay yes`` here) it keeps headquarters and the unit up with a one-time
sign-in link to the operations room."""

from __future__ import annotations

import http.client
import os
import re
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from scripts.demo import DEVICE_ID
from tests.integration.agent_util import BIN, verify_json

REPO = Path(__file__).resolve().parents[2]


def start_demo(data: Path, script: str, *extra: str) -> subprocess.Popen[bytes]:
    """scripts/demo.py with its stdin not a terminal (a developer's terminal must not make it stay up)."""
    return subprocess.Popen(
        [str(BIN / "python"), str(REPO / "scripts" / "demo.py"), "--data-dir", str(data), "--script", script, *extra],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=REPO,
        start_new_session=True,
    )


def demo(data: Path, script: str, interrupt_on: str | None = None) -> tuple[int, list[str]]:
    """Run scripts/demo.py; with ``interrupt_on``, Ctrl-C it (SIGINT to its process group, as a
    terminal does) once a line containing that text is printed."""
    proc = start_demo(data, script)
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


def _get(url: str, ca: Path, cookie: str = "") -> http.client.HTTPResponse:
    return _fetch(url, ca, cookie)[0]


def _fetch(url: str, ca: Path, cookie: str = "") -> tuple[http.client.HTTPResponse, bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPSConnection(parts.netloc, context=ssl.create_default_context(cafile=str(ca)), timeout=60)
    conn.request("GET", parts.path, headers={"Cookie": cookie} if cookie else {})
    response = conn.getresponse()
    return response, response.read()


def test_staying_up_serves_the_operations_room_with_a_one_time_link_until_ctrl_c(tmp_path: Path) -> None:
    data = tmp_path / "run-data"
    proc = start_demo(data, "2:record,4:record", "--stay", "yes")
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            lines.append(raw.decode(errors="replace").rstrip("\n"))
            if lines[-1].startswith("Sign in "):
                break
        text = "\n".join(lines)
        opened = [line.split()[1] for line in lines if line.startswith("Open ")]
        link = lines[-1].split()[2] if lines and lines[-1].startswith("Sign in ") else ""
        assert opened and link.startswith(opened[0] + "link/"), text
        ca = data / "hq" / "keys" / "ca.pem"

        signed_in = _get(link, ca)
        assert signed_in.status == 303, text
        cookie = signed_in.getheader("Set-Cookie", "").split(";")[0]
        assert cookie.startswith("__Host-"), cookie  # Secure, host-only: headquarters speaks TLS
        units = _get(opened[0] + "units", ca, cookie)
        assert units.status == 200
        assert _get(link, ca).status == 401, "a one-time link signed in twice"
        # the incident's recording is found and plays: the demo started decryptd beside headquarters
        found, page = _fetch(opened[0] + "evidence", ca, cookie)
        recording = re.search(r'data-recording="([0-9a-f-]+)"', page.decode())
        assert found.status == 200 and recording, page.decode()[-2000:]
        played, mp4 = _fetch(f"{opened[0]}evidence/{DEVICE_ID}/{recording.group(1)}/play.mp4", ca, cookie)
        assert played.status == 200 and played.getheader("Content-Type") == "video/mp4", mp4[:300]
        assert mp4[4:8] == b"ftyp" and len(mp4) > 10_000

        # the unit runs again: it answers its control socket after the incident
        deadline = time.monotonic() + 60
        while not (data / "unit" / "ctl.sock").exists():
            assert proc.poll() is None and time.monotonic() < deadline, text
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)
        rest, _ = proc.communicate(timeout=90)
        tail = rest.decode(errors="replace")
        assert proc.returncode == 0, text + tail
        assert "stopped the unit" in tail and "Traceback" not in tail, tail
        assert not (data / "unit" / "ctl.sock").exists(), "the agent did not stop"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
