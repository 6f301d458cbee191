"""Helpers shared by the bench sections: parsing tool output and /proc, ratios, and running a section safely."""

from __future__ import annotations

import logging
import os
import platform
import shutil
import subprocess
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("bench")

MB = 1_000_000  # throughput figures are in MB/s of 10^6 bytes, as openssl speed reports them
MIB = 1024 * 1024
CLK_TCK = os.sysconf("SC_CLK_TCK")

Result = dict[str, Any]


class BenchError(Exception):
    """A section cannot produce a figure: a tool is missing, a process failed, an output did not parse."""


# -- pure helpers (tested in tests/unit/test_bench_helpers.py) ----------------------------------


def parse_openssl_speed(output: str, algorithm: str) -> float:
    """Bytes per second from ``openssl speed`` output: the last column of the row for ``algorithm``.

    openssl prints figures in 1000s of bytes per second with a ``k`` suffix, e.g.
    ``AES-256-GCM    4473527.08k``; the row name is matched case-insensitively.
    """
    rows = [line.split() for line in output.splitlines() if line.strip()]
    matching = [r for r in rows if r[0].lower() == algorithm.lower() and len(r) >= 2]
    if not matching:
        raise BenchError(f"openssl speed printed no {algorithm!r} row")
    last = matching[-1][-1]
    try:
        value = float(last[:-1]) * 1000 if last.endswith("k") else float(last)
    except ValueError:
        raise BenchError(f"openssl speed: cannot read {last!r} as a rate") from None
    return value


def seal_ceiling(aes_bps: float, sha_bps: float) -> float:
    """Bytes per second one core can seal at best: encrypt once, hash plaintext and ciphertext."""
    return 1.0 / (1.0 / aes_bps + 2.0 / sha_bps)


def ratio(numerator: float | None, denominator: float | None, digits: int = 3) -> float | None:
    """``numerator / denominator`` rounded, or None when either is missing or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return round(numerator / denominator, digits)


def proc_stat_cpu_s(stat_text: str, clk_tck: int = CLK_TCK) -> float:
    """CPU seconds (utime + stime) of a process from the text of ``/proc/PID/stat``.

    The command name (field 2) may hold spaces and parentheses, so fields are counted from
    the last ``)``: what follows starts at field 3 (state); utime and stime are fields 14, 15.
    """
    try:
        rest = stat_text[stat_text.rindex(")") + 1 :].split()
        return (int(rest[11]) + int(rest[12])) / clk_tck
    except (ValueError, IndexError):
        raise BenchError(f"not a /proc/PID/stat line: {stat_text[:80]!r}") from None


def proc_status_kib(status_text: str, key: str) -> int | None:
    """A ``kB`` figure from ``/proc/PID/status`` (e.g. ``VmHWM``), or None when absent."""
    for line in status_text.splitlines():
        name, _, value = line.partition(":")
        if name == key:
            parts = value.split()
            return int(parts[0]) if parts and parts[0].isdigit() else None
    return None


def sum_tracks(manifests: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """Frames and drops per track name over the segment manifests given (events are skipped)."""
    totals: dict[str, dict[str, int]] = {}
    for m in manifests:
        if m.get("type") != "segment":
            continue
        for track in m.get("tracks", []):
            t = totals.setdefault(track["name"], {"frames": 0, "dropped": 0})
            t["frames"] += int(track["frames"])
            t["dropped"] += int(track["dropped"])
    return totals


def footage_s(manifests: Iterable[Mapping[str, Any]]) -> float:
    """Seconds of footage the segment manifests cover (monotonic start to end of each)."""
    total_ns = sum(
        int(m["time"]["mono_end_ns"]) - int(m["time"]["mono_start_ns"]) for m in manifests if m.get("type") == "segment"
    )
    return round(total_ns / 1e9, 3)


def log_findings(lines: Iterable[str], ignore: Iterable[str] = (), limit: int = 20) -> dict[str, Any]:
    """The WARNING, ERROR and CRITICAL lines of a log (minus those containing an ``ignore`` text):
    counts per level and the first ``limit`` lines."""
    ignored = tuple(ignore)
    counts = {"WARNING": 0, "ERROR": 0, "CRITICAL": 0}
    first: list[str] = []
    for line in lines:
        level = next((lv for lv in counts if f" {lv} " in line), None)
        if level is None or any(text in line for text in ignored):
            continue
        counts[level] += 1
        if len(first) < limit:
            first.append(line.rstrip()[:300])
    return {"counts": counts, "first": first}


# -- the shell --------------------------------------------------------------------------------


def machine() -> Result:
    """What each section records about the machine it ran on: ``nproc`` and how busy it was."""
    load1, load5, _ = os.getloadavg()
    return {"nproc": len(os.sched_getaffinity(0)), "loadavg_1m": round(load1, 2), "loadavg_5m": round(load5, 2),
            "cpu": _cpu_model()}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run_section(name: str, body: Callable[[], Result]) -> Result:
    """Run one section; any failure becomes ``{"error": ...}`` so the other sections still run."""
    log.info("== %s ==", name)
    started = time.monotonic()
    try:
        result = body()
    except Exception as exc:
        log.error("%s failed: %s\n%s", name, exc, traceback.format_exc())
        result = {"error": f"{type(exc).__name__}: {exc}"}
    result["section_wall_s"] = round(time.monotonic() - started, 1)
    return result


def guarded(label: str, body: Callable[[], Result]) -> Result:
    """A part of a section: its failure becomes ``{"error": ...}`` beside the parts that worked."""
    try:
        return body()
    except Exception as exc:
        log.error("%s failed: %s\n%s", label, exc, traceback.format_exc())
        return {"error": f"{type(exc).__name__}: {exc}"}


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BenchError(f"{name} is not installed (not on PATH)")
    return path


def run_tool(argv: list[str], timeout_s: float, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command to completion, capturing its output; a non-zero exit is a BenchError with its stderr."""
    log.info("running: %s", " ".join(argv))
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, cwd=cwd, check=False)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{argv[0]} did not finish within {timeout_s:.0f} s") from None
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        raise BenchError(f"{' '.join(argv[:3])}... exited {done.returncode}: {tail}")
    return done
