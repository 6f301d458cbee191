"""The pure helpers of scripts/bench: parsing openssl and /proc output, ratios, manifest sums, log findings,
and the sync section's chunking, cut offsets and curl config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
from scripts.bench.summary import estimate_s as bench_estimate_s
from scripts.bench.summary import render as render_summary
from scripts.bench.summary import rows as summary_rows
from scripts.bench.summary import verdict as summary_verdict
from scripts.bench.sync import (
    CurlRequest,
    best,
    chunk_ranges,
    curl_config,
    curl_quote,
    cut_offsets,
    median_run,
    parse_curl_writeout,
    rate,
    resent_figures,
    split_for_cut,
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


# -- the sync section's helpers ------------------------------------------------------------------


def test_chunk_ranges_cover_the_file_as_the_worker_sends_it() -> None:
    assert chunk_ranges(10, 4) == [(0, 4), (4, 4), (8, 2)]
    assert chunk_ranges(8, 4) == [(0, 4), (4, 4)]
    assert chunk_ranges(0, 4) == [(0, 0)]  # an empty file: one empty PATCH completes it
    with pytest.raises(ValueError):
        chunk_ranges(10, 0)


def test_cut_offsets_are_seeded_increasing_and_bounded() -> None:
    cuts = cut_offsets(7, 1000, 20_000)
    assert cuts == cut_offsets(7, 1000, 20_000)  # the same seed, the same cuts
    assert cuts != cut_offsets(8, 1000, 20_000)
    gaps = [b - a for a, b in zip([0, *cuts], cuts, strict=False)]
    assert all(500 <= g <= 1500 for g in gaps)
    assert 20_000 - 1500 < cuts[-1] <= 20_000  # the next gap would have passed the limit
    assert cut_offsets(7, 1000, 100) == []


def test_split_for_cut_forwards_up_to_the_cut_byte() -> None:
    assert split_for_cut(0, 100, None) == (100, False)
    assert split_for_cut(0, 100, 150) == (100, False)
    assert split_for_cut(100, 100, 150) == (50, True)
    assert split_for_cut(100, 50, 150) == (50, True)  # ends exactly at the cut: cut after it
    assert split_for_cut(200, 10, 150) == (0, True)  # a cut already passed: nothing more goes through


def test_curl_config_quotes_signature_headers() -> None:
    assert curl_quote('sig1=("@method");keyid="u\\1"') == '"sig1=(\\"@method\\");keyid=\\"u\\\\1\\""'
    with pytest.raises(ValueError):
        curl_quote("a\nb")
    reqs = [CurlRequest("PATCH", f"https://127.0.0.1:1/v1/uploads/{i}", {"Upload-Offset": "0"}, Path(f"/c/{i}"))
            for i in range(2)]
    text = curl_config(reqs, Path("/k/ca.pem"))
    blocks = text.split("\nnext\n")
    assert len(blocks) == 2 and text.startswith("silent\n")
    assert 'header = "Upload-Offset: 0"' in blocks[1] and 'data-binary = "@/c/1"' in blocks[1]
    assert 'header = "Expect:"' in blocks[0] and 'cacert = "/k/ca.pem"' in blocks[0]


def test_curl_writeout_parses_and_rejects_garbage() -> None:
    rows = parse_curl_writeout("204 1048576 1 0.012\n\n204 5 0 0.001\n")
    assert rows == [{"status": 204, "size_upload": 1048576, "num_connects": 1, "time_total_s": 0.012},
                    {"status": 204, "size_upload": 5, "num_connects": 0, "time_total_s": 0.001}]
    with pytest.raises(BenchError):
        parse_curl_writeout("curl: (7) failed\n")


def test_rate_and_resent_figures() -> None:
    assert rate(2_000_000, 2.0) == {"MB_per_s": 1.0, "Mbit_per_s": 8.0}
    assert rate(1, 0.0) == {"MB_per_s": None, "Mbit_per_s": None}
    assert resent_figures(1_500, 1_000, 2, 500) == {"resent_bytes": 500, "resent_bytes_per_cut": 250,
                                                    "resent_chunks_per_cut": 0.5}
    assert resent_figures(1_000, 1_000, 0, 500)["resent_chunks_per_cut"] is None


def test_median_run_keeps_the_middle_run_and_lists_them_all() -> None:
    runs = [{"MB_per_s": 3.0, "n": 0}, {"error": "boom"}, {"MB_per_s": 1.0, "n": 2}, {"MB_per_s": 2.0, "n": 3}]
    assert median_run(runs) == {"MB_per_s": 2.0, "n": 3, "runs_MB_per_s": [3.0, None, 1.0, 2.0]}
    assert median_run([{"MB_per_s": 1.0}, {"MB_per_s": 2.0}])["MB_per_s"] == 1.0  # the lower middle
    assert median_run([{"error": "boom"}]) == {"error": "boom"}
    assert best([{"MB_per_s": 1.0}, {"error": "boom"}, {"MB_per_s": 3.0}]) == 3.0
    assert best([{"error": "boom"}]) is None


# --- the verdict table (scripts/bench/summary.py) ----------------------------------------------


def _bench_doc() -> dict[str, Any]:
    def chunk(mb_per_cpu_s: float) -> dict[str, Any]:
        return {"sealing": {"mb_per_cpu_s": mb_per_cpu_s}, "openssl_aes_256_gcm_mb_per_s": 1000.0,
                "ratio_cpu": mb_per_cpu_s / 1000, "goal": 0.9}

    return {"sections": {
        "evidence": {"sealing": {"goal_ratio": 0.9, "chunk_1024k": chunk(950.0), "chunk_64k": chunk(500.0)},
                     "verification": {"public": {"mb_per_s": 600.0}}},
        "agent": {"process": {"cpu": {"cpu_s_per_footage_s": 0.4},
                              "memory": {"peak_rss_mib": 150.0, "pre_event_before_start": {"buffered_s": 120.4,
                                                                                           "buffered_mib": 78.5}},
                              "frames": {"dropped_total": 3, "dropped_goal": 0}},
                  "one_core": {"cpu": {"cpu_s_per_footage_s": 0.5}, "pre_event_filled_s_at_start": 2.0,
                               "frames": {"dropped_total": 0, "dropped_goal": 0}}},
        "vs_ffmpeg": {"error": "BenchError: ffmpeg is not installed (not on PATH)"},
        "sync": {"summary": {"ratio_capped_achieved_over_cap": 0.95, "cap_goal": 0.9,
                             "worst_run_resent_chunks_per_cut": 1.0, "resent_goal_max_chunks_per_cut": 1,
                             "recorder_dropped_while_syncing": {"uncapped": 0, "capped": None}, "dropped_goal": 0}},
    }}


def test_the_verdict_table_judges_each_figure_against_its_recorded_goal() -> None:
    table = {row.figure: row for row in summary_rows(_bench_doc())}
    sealing_64k, sealing_1m = table["sealing, 64k chunks (per CPU s)"], table["sealing, 1024k chunks (per CPU s)"]
    assert (sealing_64k.ratio, sealing_64k.met, sealing_64k.goal) == (0.5, False, ">= 0.9 x openssl")
    assert (sealing_1m.ratio, sealing_1m.met) == (0.95, True)
    assert table["verification, public"].met is None  # no goal: listed for information
    dropped = table["agent 1080p30 street: frames dropped"]
    assert (dropped.measured, dropped.met) == ("3", False)
    one_core = table["agent 1080p30 street, 1 core: frames dropped"]
    assert (one_core.measured, one_core.met) == ("0", True)
    assert table["agent 1080p30 street, 1 core: peak memory (pre-event 2 s buffered)"].measured == "missing"
    full = table["agent 1080p30 street: peak memory (pre-event 120 s buffered, 78.5 MiB of it)"]
    assert full.measured == "150.0 MiB"
    assert table["vs_ffmpeg: section failed"].met is False
    assert table["sync: rate under a bandwidth cap"].met is True
    assert table["sync: chunks re-sent per cut (worst run)"].met is True
    assert table["sync: frames dropped while syncing (capped)"].measured == "missing"
    assert table["sync: frames dropped while syncing (capped)"].met is None


def test_the_verdict_names_what_was_missed_and_the_table_has_one_line_per_row() -> None:
    table = summary_rows(_bench_doc())
    assert summary_verdict(table) == (
        "5 of 8 goals met; missed: sealing, 64k chunks (per CPU s); agent 1080p30 street: frames dropped; "
        "vs_ffmpeg: section failed")
    text = render_summary(table).splitlines()
    assert len(text) == 1 + len(table) and text[0].split() == ["figure", "measured", "goal", "ratio", "met"]
    assert text[1].startswith("sealing, 64k chunks") and text[1].endswith("NO")


def test_the_estimate_adds_up_the_sections_asked_for() -> None:
    full = bench_estimate_s(["evidence", "agent", "vs_ffmpeg", "sync"], quick=False)
    assert bench_estimate_s(["evidence"], quick=False) < full
    assert bench_estimate_s(["evidence", "agent", "vs_ffmpeg", "sync"], quick=True) < full
