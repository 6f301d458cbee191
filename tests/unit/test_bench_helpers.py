"""The pure helpers of scripts/bench: parsing openssl and /proc output, ratios, manifest sums, log findings."""

from __future__ import annotations

import pytest

from scripts.bench.common import (
    BenchError,
    footage_s,
    log_findings,
    parse_openssl_speed,
    proc_stat_cpu_s,
    proc_status_kib,
    ratio,
    seal_ceiling,
    sum_tracks,
)

OPENSSL_AES = """\
version: 3.0.19
built on: Tue Jan 27 00:00:00 2026 UTC
options: bn(64,64)
CPUINFO: OPENSSL_ia32cap=0xfffa3203078bffff:0x405fc6f1bf07ab
The 'numbers' are in 1000s of bytes per second processed.
type          65536 bytes
AES-256-GCM    4473527.08k
"""

OPENSSL_SHA_ALL_SIZES = """\
The 'numbers' are in 1000s of bytes per second processed.
type             16 bytes     64 bytes    256 bytes   1024 bytes   8192 bytes  16384 bytes
sha256          152349.82k   487293.31k  1044391.25k  1496524.80k  1755938.13k  1779171.33k
"""


def test_openssl_speed_reads_the_last_column_in_bytes_per_second() -> None:
    assert parse_openssl_speed(OPENSSL_AES, "AES-256-GCM") == pytest.approx(4_473_527_080)
    assert parse_openssl_speed(OPENSSL_SHA_ALL_SIZES, "SHA256") == pytest.approx(1_779_171_330)


def test_openssl_speed_without_the_row_is_an_error() -> None:
    with pytest.raises(BenchError, match="no 'sha256' row"):
        parse_openssl_speed(OPENSSL_AES, "sha256")
    with pytest.raises(BenchError, match="cannot read"):
        parse_openssl_speed("sha256 fast\n", "sha256")


def test_seal_ceiling_counts_two_hashes_and_one_encryption() -> None:
    assert seal_ceiling(1000.0, 2000.0) == pytest.approx(500.0)
    assert seal_ceiling(4000.0, 2000.0) < 1000.0  # hashing twice bounds it below half of SHA's speed


def test_ratio_is_none_when_a_figure_is_missing_or_zero() -> None:
    assert ratio(1.0, 3.0) == 0.333
    assert ratio(None, 3.0) is None
    assert ratio(1.0, None) is None
    assert ratio(1.0, 0.0) is None


def test_proc_stat_counts_from_the_last_parenthesis() -> None:
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime ...
    line = "4242 (odd) name)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 3 4 20 0 5 0 1 0 0"
    assert proc_stat_cpu_s(line, clk_tck=100) == pytest.approx(3.0)
    with pytest.raises(BenchError):
        proc_stat_cpu_s("garbage", clk_tck=100)


def test_proc_status_reads_a_kib_field() -> None:
    text = "Name:\tbodycam\nVmPeak:\t  300000 kB\nVmHWM:\t  151176 kB\nVmRSS:\t  140000 kB\n"
    assert proc_status_kib(text, "VmHWM") == 151176
    assert proc_status_kib(text, "VmSwap") is None


def _segment(tracks: list[tuple[str, int, int]], start_ns: int, end_ns: int) -> dict[str, object]:
    return {
        "type": "segment",
        "time": {"mono_start_ns": start_ns, "mono_end_ns": end_ns},
        "tracks": [{"name": n, "frames": f, "dropped": d} for n, f, d in tracks],
    }


def test_track_sums_and_footage_skip_events() -> None:
    manifests = [
        {"type": "event", "event": "record-start", "time": {"mono_start_ns": 0, "mono_end_ns": 0}},
        _segment([("chest", 300, 0), ("audio", 480000, 0)], 0, 10_000_000_000),
        _segment([("chest", 150, 2)], 10_000_000_000, 15_000_000_000),
    ]
    assert sum_tracks(manifests) == {"chest": {"frames": 450, "dropped": 2}, "audio": {"frames": 480000, "dropped": 0}}
    assert footage_s(manifests) == 15.0


def test_log_findings_counts_levels_and_honours_ignores() -> None:
    lines = [
        "2026-01-01 00:00:00,000 INFO bodycam: READY",
        "2026-01-01 00:00:01,000 WARNING agent.recorder: late packet",
        "2026-01-01 00:00:02,000 ERROR agent.workers: chest failed: boom",
        "2026-01-01 00:00:03,000 WARNING bodycam: DEVELOPMENT ONLY: created a key",
    ]
    found = log_findings(lines, ignore=["DEVELOPMENT ONLY"], limit=1)
    assert found["counts"] == {"WARNING": 1, "ERROR": 1, "CRITICAL": 0}
    assert found["first"] == [lines[1]]
