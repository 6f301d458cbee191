"""The system tools the tests drive besides the Python packages in .venv, and how to install them.

One table for both sides: ``scripts/check-prereqs`` (run by ``make test`` before anything else)
checks every tool in it and prints the one command that installs what is missing, and a test
that needs a tool calls ``require_tool``, which fails (never skips) with that command. A tool a
test needs but the table lacks is a KeyError: add it here, with its Debian package.

Plain Python 3 with no third-party import at module level: check-prereqs runs it with the
system's python3, before the venv exists.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

# tool -> (Debian package, what needs it)
TOOLS: dict[str, tuple[str, str]] = {
    "gpsd": ("gpsd", "the GNSS driver's tests talk to a real gpsd"),
    "shellcheck": ("shellcheck", "the shell scripts are checked with it"),
    "systemd-analyze": ("systemd", "the unit files are verified and their exposure scored with it"),
    "systemd-sysusers": ("systemd", "the agent's user and data dir are made from the shipped sysusers.d"),
    "systemd-tmpfiles": ("systemd", "the agent's user and data dir are made from the shipped tmpfiles.d"),
    "make": ("make", "make install is run into a staging tree"),
    "socat": ("socat", "the README's console example pairs two ptys with it"),
    "ffprobe": ("ffmpeg", "the README's decryption example probes the decrypted files with it"),
    "initdb": ("postgresql", "headquarters' index is tested on a real PostgreSQL (tests/pg_util.py)"),
    "pg_ctl": ("postgresql", "headquarters' index is tested on a real PostgreSQL (tests/pg_util.py)"),
    "openssl": ("openssl", "headquarters' TLS profiles are probed with openssl s_client"),
    "haproxy": ("haproxy", "a headquarters node is tested behind a TLS-terminating HAProxy"),
    "nginx": ("nginx-light", "a headquarters node is tested behind a TLS-terminating nginx"),
    "janus": ("janus", "live view is tested through a real Janus media server (tests/janus_util.py)"),
    "turnserver": ("coturn", "live view over carrier NAT is tested through a real TURN server (coturn)"),
    "pdftotext": ("poppler-utils", "exported audit trails (PDF) are read back with it"),
    "chromium": ("chromium", "the operations room is tested in a real browser (tests/browser_util.py, Playwright)"),
}
MIN_PYTHON = (3, 11)
# gpsd is installed in sbin, which is not on every user's PATH
SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")
# Debian keeps PostgreSQL's server tools (initdb, pg_ctl) off PATH, one folder per major version
VERSIONED_DIRS = "/usr/lib/postgresql"


def _versioned_dirs() -> list[str]:
    """``/usr/lib/postgresql/<version>/bin``, newest version first."""
    try:
        versions = [v for v in os.listdir(VERSIONED_DIRS) if v.replace(".", "").isdigit()]
    except OSError:
        return []
    versions.sort(key=lambda v: [int(p) for p in v.split(".")], reverse=True)
    return [os.path.join(VERSIONED_DIRS, v, "bin") for v in versions]


def find_tool(name: str) -> str | None:
    """The tool's path, from PATH or the sbin directories; None when it is not installed."""
    found = shutil.which(name)
    if found is not None:
        return found
    for folder in (*SBIN_DIRS, *_versioned_dirs()):
        candidate = os.path.join(folder, name)
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def install_command(packages: list[str]) -> str:
    """The exact command a person runs to install ``packages`` on Debian or Raspberry Pi OS."""
    sudo = "" if os.geteuid() == 0 else "sudo "
    return f"{sudo}apt-get update && {sudo}apt-get install -y {' '.join(sorted(set(packages)))}"


def missing_python() -> list[str]:
    """Debian packages the Python side lacks: a new enough python3 with venv and pip (python3-venv)."""
    if sys.version_info < MIN_PYTHON:
        return ["python3"]
    try:
        import ensurepip  # noqa: F401  # Debian ships it in python3-venv; `python3 -m venv` needs it
        import venv  # noqa: F401
    except ImportError:
        return ["python3-venv"]
    return []


def missing_tools() -> dict[str, tuple[str, str]]:
    return {tool: info for tool, info in TOOLS.items() if find_tool(tool) is None}


def require_tool(name: str) -> str:
    """The tool's path, or fail the calling test with the command that installs it."""
    package, why = TOOLS[name]
    path = find_tool(name)
    if path is None:
        import pytest

        pytest.fail(f"{name} is not installed ({why}): run `{install_command([package])}`", pytrace=False)
    return path


def needs(*tools: str) -> Callable[[F], F]:
    """Decorator: the test fails with the install command unless every tool is installed."""

    def wrap(test: F) -> F:
        @functools.wraps(test)  # keeps the signature, so pytest still passes the fixtures
        def checked(*args: Any, **kwargs: Any) -> Any:
            for tool in tools:
                require_tool(tool)
            return test(*args, **kwargs)

        return checked  # type: ignore[return-value]

    return wrap


def report() -> tuple[bool, list[str]]:
    """(all present, lines to print) for check-prereqs."""
    python = missing_python()
    tools = missing_tools()
    if not python and not tools:
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        return True, [f"make test: python3 {version} with venv, {', '.join(TOOLS)}: all here"]
    lines = ["make test needs what this machine lacks:"]
    if python:
        lines.append(f"  {python[0]}: Python {'.'.join(map(str, MIN_PYTHON))} or later with venv and pip "
                     f"(this is {sys.version.split()[0]})")
    lines += [f"  {tool} (package {package}): {why}" for tool, (package, why) in tools.items()]
    lines.append("install it with:")
    lines.append("  " + install_command([*python, *(package for package, _ in tools.values())]))
    return False, lines
