"""Every shell command in README.md (and the docs it links) runs as printed, after a `make run`-like
setup on a scratch copy, so a README that drifts from the code fails `make test`.

Each ```sh block runs in order in one scratch folder with the venv's tools on PATH (as after
`. .venv/bin/activate`). A line ending in `&` starts in the background and is stopped at the end
of its block; a `bodycam ctl` or `bodycam diag` that exits 3 (nothing listening yet) is retried
while a background unit starts. Lines that cannot run here are listed in SKIPPED with the reason;
the few values a test cannot use as printed are in SUBSTITUTIONS, with the reason.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.agent_util import BIN
from tests.prereqs import needs

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", REPO / "docs" / "console.md", REPO / "docs" / "deployment.md"]
NOT_LISTENING = 3  # bodycam ctl: no agent; bodycam diag: port absent or silent
STARTUP_S = 60.0
COMMAND_TIMEOUT_S = 120.0

# (start of the command, why it is not run here)
SKIPPED = [
    ("make run", "the setup of this test runs scripts/demo.py, what `make run` runs"),
    ("make test", "runs this test"),
    ("bodycam diag --port /dev/tty", "needs a unit on a serial cable (the pty pair block runs the same commands)"),
    ("sudo ", "installs onto a unit (root, systemd, udev): tests/integration/test_install.py covers it"),
    ("journalctl", "reads a unit's systemd journal"),
    ("systemctl", "needs the agent installed as a systemd service"),
]
# (text in a command, what the test runs instead, why)
SUBSTITUTIONS = [
    ("bodycam run --data-dir /var/lib/bodycam", "bodycam run --sim --data-dir /var/lib/bodycam --duration 20",
     "the README's unit runs on its real sensors until stopped; here it runs simulated for 20 s and syncs"),
    ("/var/lib/bodycam", "unit-0042", "a scratch folder instead of the unit's system data dir"),
    ("127.0.0.1:8443", "127.0.0.1:{port}", "a free port: 8443 may be taken on a shared machine"),
    ("/tmp/bodycam-", "{scratch}/tty-", "ptys inside the scratch folder"),
    ("~/", "{scratch}/home/", "the technician's home"),
]


def shell_blocks(path: Path) -> list[list[str]]:
    """The commands of each ```sh block: continuation lines joined, comments and blanks dropped."""
    blocks: list[list[str]] = []
    for body in re.findall(r"^```sh\n(.*?)^```", path.read_text(), re.M | re.S):
        commands, pending = [], ""
        for line in body.splitlines():
            pending += line.rstrip()
            if pending.endswith("\\"):
                pending = pending[:-1] + " "
                continue
            command = re.sub(r"\s+#.*$", "", pending).strip()
            pending = ""
            if command and not command.startswith("#"):
                commands.append(command)
        blocks.append(commands)
    return blocks


def skip_reason(command: str) -> str | None:
    return next((why for start, why in SKIPPED if command.startswith(start)), None)


def substitute(command: str, scratch: Path, port: int) -> str:
    for text, instead, _why in SUBSTITUTIONS:
        command = command.replace(text, instead.format(port=port, scratch=scratch))
    return command


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch folder holding what `make run` leaves: run-data/{unit,hq,export}."""
    root = tmp_path_factory.mktemp("readme")
    (root / "home").mkdir()
    demo = [str(BIN / "python"), str(REPO / "scripts" / "demo.py"), "--data-dir", str(root / "run-data"),
            "--script", "2:record,4:mark,8:record"]
    if "--duration" in subprocess.run([*demo[:2], "--help"], capture_output=True, text=True, check=False).stdout:
        demo += ["--duration", "16"]
    done = subprocess.run(demo, stdin=subprocess.DEVNULL, capture_output=True, text=True, cwd=REPO, timeout=240,
                          check=False, start_new_session=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return root


def run_block(commands: list[str], scratch: Path) -> list[str]:
    """Run one block's commands; the failures, each with its output."""
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "HOME": str(scratch / "home")}
    port, background, failures = free_port(), [], []
    try:
        for original in commands:
            if skip_reason(original):
                continue
            command = substitute(original, scratch, port)
            if command.endswith("&"):
                background.append(subprocess.Popen(["bash", "-c", f"exec {command[:-1]}"], cwd=scratch, env=env,
                                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                                   start_new_session=True))
                continue
            deadline = time.monotonic() + STARTUP_S
            while True:
                done = subprocess.run(["bash", "-c", command], cwd=scratch, env=env, capture_output=True, text=True,
                                      timeout=COMMAND_TIMEOUT_S, check=False)
                waiting = done.returncode == NOT_LISTENING and background and time.monotonic() < deadline
                if not waiting:
                    break
                time.sleep(0.5)
            if done.returncode != 0:
                failures.append(f"{original}\n  ran: {command}\n  exit {done.returncode}\n"
                                f"{done.stdout[-1500:]}{done.stderr[-1500:]}")
    finally:
        for proc in reversed(background):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return failures


BLOCKS = [(path, i, block) for path in DOCS for i, block in enumerate(shell_blocks(path))]


@needs("socat", "ffprobe")
@pytest.mark.parametrize(("path", "index", "commands"), BLOCKS,
                         ids=[f"{p.name}-{i}" for p, i, _ in BLOCKS])
def test_every_documented_command_runs(path: Path, index: int, commands: list[str], scratch: Path) -> None:
    if all(skip_reason(c) for c in commands):
        pytest.skip("; ".join(sorted({str(skip_reason(c)) for c in commands})))
    failures = run_block(commands, scratch)
    assert not failures, f"{path.name} block {index}:\n" + "\n".join(failures)


def test_the_readme_has_blocks_and_every_skip_still_matches_a_command() -> None:
    commands = [c for _p, _i, block in BLOCKS for c in block]
    assert len(commands) > 20
    for start, why in SKIPPED:
        assert any(c.startswith(start) for c in commands), f"SKIPPED entry {start!r} ({why}) matches nothing now"
