"""``make install`` into a staging root, then ``provision-unit --root`` on it, as an image build does.

The install is real (a venv with the package and its dependencies, from the same package index the
dev venv came from); it takes about half a minute and is shared by the tests of this module.
"""

from __future__ import annotations

import base64
import hashlib
import marshal
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_systemd import needs_analyze, passwd_entry, stage_root, user_database
from tests.prereqs import needs, require_tool

REPO = Path(__file__).resolve().parents[2]
PREFIX = "/opt/bodycam-ci"  # not the default: proves every installed file follows PREFIX
DEV_BIN = Path(sys.executable).parent
UNITS = ("bodycam-agent.service", "bodycam-console@ttyGS0.service")

@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    require_tool("make")
    root = tmp_path_factory.mktemp("stage")
    out = subprocess.run(
        ["make", "-C", str(REPO), "install", f"DESTDIR={root}", f"PREFIX={PREFIX}", f"INSTALL_PYTHON={sys.executable}"],
        capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    yield root


def venv(stage: Path) -> Path:
    return stage / PREFIX.lstrip("/") / "venv"


def staged(stage: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A console script of the staged venv, run through its python (its shebang names the unit's path)."""
    v = venv(stage)
    return subprocess.run([str(v / "bin/python"), str(v / "bin" / args[0]), *args[1:]],
                          capture_output=True, text=True, timeout=120)


def test_the_tree_is_complete(stage: Path) -> None:
    prefix = stage / PREFIX.lstrip("/")
    expected = [
        "usr/lib/systemd/system/bodycam-agent.service",
        "usr/lib/systemd/system/bodycam-console@.service",
        "usr/lib/sysusers.d/bodycam.conf",
        "usr/lib/tmpfiles.d/bodycam.conf",
        "usr/lib/udev/rules.d/60-bodycam.rules",
    ]
    for rel in expected:
        assert (stage / rel).is_file(), rel
        assert stat.S_IMODE((stage / rel).stat().st_mode) == 0o644, rel
    for rel in ("configs/pi5-unit.toml", "configs/jetson-orin-nano.toml", "systemd/jetson.conf"):
        assert (prefix / "share/bodycam" / rel).is_file(), rel
    assert (prefix / "share/doc/bodycam/deployment.md").is_file()
    assert os.access(prefix / "sbin/provision-unit", os.X_OK)
    assert os.readlink(stage / "usr/local/bin/bodycam") == f"{PREFIX}/venv/bin/bodycam"


def test_the_venv_runs_bodycam(stage: Path) -> None:
    out = staged(stage, "bodycam", "--help")
    assert out.returncode == 0, out.stderr
    assert "provision" in out.stdout and "verify" in out.stdout
    assert staged(stage, "bodycam-hq", "--help").returncode == 0
    where = subprocess.run([str(venv(stage) / "bin/python"), "-c", "import agent, av, cv2; print(agent.__file__)"],
                           capture_output=True, text=True, cwd="/")
    assert where.returncode == 0, where.stderr
    assert where.stdout.startswith(str(venv(stage))), "agent was imported from outside the installed venv"


def test_the_venv_belongs_at_the_prefix_not_the_staging_dir(stage: Path) -> None:
    v = venv(stage)
    assert (v / "bin/bodycam").read_text().splitlines()[0] == f"#!{PREFIX}/venv/bin/python"
    for path in [*(v / "bin").iterdir(), v / "pyvenv.cfg"]:
        if path.is_file() and not path.is_symlink():
            assert str(stage) not in path.read_text(errors="replace"), path
    # byte code compiled at install time names the unit's paths, so tracebacks show the source
    source = next(v.glob("lib/python3*/site-packages/agent/daemon.py"))
    cached = next((source.parent / "__pycache__").glob("daemon.*.pyc"))
    code = marshal.loads(cached.read_bytes()[16:])
    assert code.co_filename == "/" + str(source.relative_to(stage))


def test_units_follow_the_prefix(stage: Path) -> None:
    agent = (stage / "usr/lib/systemd/system/bodycam-agent.service").read_text()
    assert f"ExecStart={PREFIX}/venv/bin/bodycam run --data-dir /var/lib/bodycam" in agent
    assert "/opt/bodycam/" not in agent


def provision(stage: Path, *args: str) -> subprocess.CompletedProcess[str]:
    script = stage / PREFIX.lstrip("/") / "sbin/provision-unit"
    return subprocess.run([str(script), "--root", str(stage), *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def hq_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    keys = tmp_path_factory.mktemp("hq") / "keys"
    out = subprocess.run([str(DEV_BIN / "bodycam-hq"), "keygen", "--out", str(keys)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return keys


def enrolment(stdout: str) -> tuple[str, str]:
    """(fingerprint, command) from provision-unit's output."""
    found = re.search(r"identity key SHA-256 ([0-9a-f]{64})", stdout)
    assert found, stdout
    return found.group(1), [line for line in stdout.splitlines() if "bodycam-hq enroll" in line][-1]


@pytest.mark.skipif(os.geteuid() != 0, reason="provision-unit hands the data dir to the agent's user: needs root")
@needs("systemd-sysusers")
def test_provision_unit_against_the_staged_root(stage: Path, hq_keys: Path, tmp_path: Path) -> None:
    user_database(stage)
    first = provision(stage, "--device-id", "unit-0042", "--hq-pub", str(hq_keys / "hq.pub"),
                      "--hq-url", "https://hq.example.org:8443", "--hq-ca", str(hq_keys / "ca.pem"),
                      "--hq-data", str(hq_keys.parent), "--enable")  # the headquarters that made the keys
    assert first.returncode == 0, first.stderr
    data = stage / "var/lib/bodycam"
    entry = passwd_entry(stage, "bodycam")
    uid, gid = int(entry[2]), int(entry[3])
    for path in (data, *data.iterdir()):
        st = path.stat()
        assert (st.st_uid, st.st_gid) == (uid, gid), path
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "device.key").stat().st_mode) == 0o600
    config = (data / "bodycam.toml").read_text()
    assert 'id = "unit-0042"' in config and 'url = "https://hq.example.org:8443"' in config
    assert (data / "hq-ca.pem").read_bytes() == (hq_keys / "ca.pem").read_bytes()
    wants = stage / "etc/systemd/system/multi-user.target.wants/bodycam-agent.service"
    assert os.readlink(wants) == "/usr/lib/systemd/system/bodycam-agent.service"
    assert "LogExtraFields=BODYCAM_DEVICE=unit-0042" in (
        stage / "etc/systemd/system/bodycam-agent.service.d/device.conf").read_text()
    assert "PRIVATE" not in first.stdout + first.stderr

    # the printed line is all headquarters needs: run it as printed
    fp, line = enrolment(first.stdout)
    enrolled = subprocess.run(["bash", "-c", line], capture_output=True, text=True, cwd=tmp_path,
                              env={**os.environ, "PATH": f"{DEV_BIN}:{os.environ['PATH']}"})
    assert enrolled.returncode == 0, enrolled.stderr
    assert f"enrolled unit-0042: key SHA-256 {fp}" in enrolled.stdout

    # again: the identity stays, and the enrolment line is printed again
    key = (data / "device.key").read_bytes()
    again = provision(stage, "--device-id", "unit-0042", "--hq-pub", str(hq_keys / "hq.pub"))
    assert again.returncode == 1
    assert "already has an identity" in again.stderr
    assert (data / "device.key").read_bytes() == key
    assert enrolment(again.stdout)[0] == fp

    # the installed agent runs on the provisioned data dir (simulated sensors are the defaults)
    ran = staged(stage, "bodycam", "run", "--data-dir", str(data), "--duration", "2")
    assert ran.returncode == 0, ran.stderr[-3000:]
    checked = staged(stage, "bodycam", "verify", str(data), "--device-pub", str(data / "device.pub"))
    assert checked.returncode == 0, checked.stdout + checked.stderr

    # --force does not replace an identity whose evidence is still beside it
    refused = provision(stage, "--device-id", "unit-0042", "--hq-pub", str(hq_keys / "hq.pub"), "--force")
    assert refused.returncode == 1
    assert "signed with its current identity" in refused.stderr
    assert (data / "device.key").read_bytes() == key

    # once the evidence has been moved aside, --force replaces it
    aside = tmp_path / "evidence-aside"
    aside.mkdir()
    for name in ("segments", "quarantine", "index.sqlite", "index.sqlite-wal", "index.sqlite-shm"):
        if (data / name).exists():
            shutil.move(data / name, aside / name)
    forced = provision(stage, "--device-id", "unit-0042", "--hq-pub", str(hq_keys / "hq.pub"), "--force")
    assert forced.returncode == 0, forced.stderr
    assert (data / "device.key").read_bytes() != key
    assert enrolment(forced.stdout)[0] != fp
    der = base64.b64decode("".join((data / "device.pub").read_text().splitlines()[1:-1]))
    assert enrolment(forced.stdout)[0] == hashlib.sha256(der).hexdigest()


@needs_analyze
def test_installed_units_verify_with_their_drop_ins(stage: Path) -> None:
    # the staged root already holds the installed units; add the host's for sysinit.target & co.
    stage_root(stage, units=None)
    for unit in UNITS:
        out = subprocess.run(["systemd-analyze", "verify", "--man=no", f"--root={stage}", unit],
                             capture_output=True, text=True)
        assert out.returncode == 0 and not (out.stdout + out.stderr).strip(), out.stdout + out.stderr


def test_provision_unit_refuses_bad_usage(stage: Path, tmp_path: Path) -> None:
    out = provision(stage, "--device-id", "x")
    assert out.returncode == 2 and "usage" in out.stderr
    out = provision(stage, "--device-id", "x", "--hq-pub", str(tmp_path / "missing.pub"))
    assert out.returncode == 1 and "no such file" in out.stderr
