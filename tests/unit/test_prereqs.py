"""What `make test` checks before it runs: a missing tool fails with the command that installs it, never a skip."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import prereqs

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def bare_machine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A PATH, sbin and PostgreSQL directories with none of the tools in them."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(prereqs, "SBIN_DIRS", ())
    monkeypatch.setattr(prereqs, "VERSIONED_DIRS", str(tmp_path / "no-postgresql"))


@pytest.mark.usefixtures("bare_machine")
def test_a_missing_tool_fails_the_test_with_the_install_command() -> None:
    sudo = "" if os.geteuid() == 0 else "sudo "
    with pytest.raises(pytest.fail.Exception) as failed:
        prereqs.require_tool("gpsd")
    assert str(failed.value) == (
        "gpsd is not installed (the GNSS driver's tests talk to a real gpsd): "
        f"run `{sudo}apt-get update && {sudo}apt-get install -y gpsd`"
    )


@pytest.mark.usefixtures("bare_machine")
def test_needs_checks_before_the_test_body_runs() -> None:
    ran: list[str] = []

    @prereqs.needs("shellcheck")
    def body(name: str) -> None:
        ran.append(name)

    with pytest.raises(pytest.fail.Exception, match=r"apt-get install -y shellcheck`$"):
        body("x")
    assert ran == []


def test_a_tool_the_table_lacks_is_an_error_not_a_skip() -> None:
    with pytest.raises(KeyError):
        prereqs.require_tool("no-such-tool")


@pytest.mark.usefixtures("bare_machine")
def test_the_report_names_each_missing_tool_and_one_command_for_all() -> None:
    ok, lines = prereqs.report()
    assert not ok
    assert lines[0] == "make test needs what this machine lacks:"
    assert {line.split()[0] for line in lines[1:-2]} == set(prereqs.TOOLS)
    packages = sorted({package for package, _ in prereqs.TOOLS.values()})
    assert lines[-2:] == ["install it with:", "  " + prereqs.install_command(packages)]
    assert lines[-1].endswith("apt-get install -y " + " ".join(packages))  # one package once
    assert len(packages) < len(prereqs.TOOLS)  # systemd's three tools come from one package


def test_check_prereqs_runs_with_the_system_python_and_says_all_is_here() -> None:
    # On this machine every tool is installed (make test checked that first); the script must
    # run without the venv, as it does on a fresh machine before `make setup`.
    done = subprocess.run(["/usr/bin/env", "python3", str(REPO / "scripts" / "check-prereqs")],
                          capture_output=True, text=True, check=False, env={"PATH": os.environ["PATH"]})
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert done.stdout.startswith(f"make test: python3 {sys.version_info.major}.") and "all here" in done.stdout
