"""`make bench`: throughput, CPU and latency figures of the evidence path and the agent.

Says first how long it will take; progress goes to stderr; at the end it prints a short table
(figure, measured, goal, ratio, met or not) and a one-line verdict, and writes the full JSON to
bench-results.json in the repo root (--output elsewhere; --json also prints it on stdout).
Figures and ratios only: a goal is printed beside a figure, never asserted, because timings
depend on the machine and on whatever else runs on it.

Sections: evidence (sealing and verification throughput against openssl), agent (the real
agent process at 1080p30 on simulated sensors), vs_ffmpeg (the same clip through the agent
and through ffmpeg), sync (uploads to a real headquarters on loopback: throughput against curl
and against a bandwidth cap, bytes re-sent per connection cut, recorder drops while syncing),
hq_connections (a headquarters node's memory at rest, per idle connection, and after 150
unsigned 4 MiB PATCHes that never send their bodies), hq_fleet (1 and 2 nodes over PostgreSQL and
S3 behind HAProxy: verified ingest against curl into nginx and SHA-256, receipts, 1,000 units'
heartbeats), live (a unit streaming through headquarters, coturn and Janus while it records:
glass-to-glass latency, recovery after a loss burst, extra CPU, recorder drops), tlog (the
transparency log's appends a second on SQLite and PostgreSQL against the fleet's rate, and the
sizes of its proofs after a day and a year), ops_map (the operations room's map with 1,000 units
in chromium: time to first render, heartbeat-to-marker latency), playback (a recording played in
chromium through the decrypt daemon: time from pressing play to the first frame, median and p95).
A failing section is reported as {"error": ...}; the others still run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # for tests.evidence_util, which builds evidence chains

from bench import agent_run, evidence, hq_conn, hq_fleet, live, ops_map, playback, sync, tlog, vs_ffmpeg  # noqa: E402
from bench.common import Result, machine, run_section  # noqa: E402
from bench.summary import estimate_s, render, rows, verdict  # noqa: E402

from agent import __version__  # noqa: E402

log = logging.getLogger("bench")

SECTIONS = ("evidence", "agent", "vs_ffmpeg", "sync", "hq_connections", "hq_fleet", "live", "tlog", "ops_map",
            "playback")


def git_commit() -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short durations and sizes (a smoke test)")
    parser.add_argument("--only", action="append", choices=SECTIONS, metavar="SECTION",
                        help=f"run only this section (repeatable): {', '.join(SECTIONS)}")
    parser.add_argument("--output", type=Path, default=REPO / "bench-results.json", help="where to write the JSON")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="work in DIR and keep the agent data dirs and clips there (default: a temp dir)")
    parser.add_argument("--json", action="store_true", help="also print the full JSON on stdout")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    wanted = args.only or list(SECTIONS)
    seconds = estimate_s([n for n in SECTIONS if n in wanted], args.quick)
    about = f"{seconds} s" if seconds < 120 else f"{seconds / 60:.0f} min"
    print(f"make bench: about {about} on a 2-core machine (longer when it is busy): "
          f"{', '.join(n for n in SECTIONS if n in wanted)}; progress below, the verdict at the end", flush=True)

    doc: Result = {
        "bench": "bodycam",
        "firmware": __version__,
        "git_commit": git_commit(),
        "started_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": machine(),
        "sections": {},
    }
    with tempfile.TemporaryDirectory(prefix="bodycam-bench-") as tmp:
        workdir = args.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        bodies: dict[str, Callable[[], Result]] = {
            "evidence": lambda: evidence.run(args.quick),
            "agent": lambda: agent_run.run(args.quick, workdir),
            "vs_ffmpeg": lambda: vs_ffmpeg.run(args.quick, workdir),
            "sync": lambda: sync.run(args.quick, workdir),
            "hq_connections": lambda: hq_conn.run(args.quick),
            "hq_fleet": lambda: hq_fleet.run(args.quick),
            "live": lambda: live.run(args.quick),
            "tlog": lambda: tlog.run(args.quick),
            "ops_map": lambda: ops_map.run(args.quick),
            "playback": lambda: playback.run(args.quick),
        }
        for name in SECTIONS:
            if name in wanted:
                doc["sections"][name] = run_section(name, bodies[name])
    doc["finished_utc"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    text = json.dumps(doc, indent=2)
    args.output.write_text(text + "\n")
    if args.json:
        sys.stdout.write(text + "\n")
    table = rows(doc)
    print(f"\n{render(table)}\n\n{verdict(table)}\nevery figure, with what it measures: {args.output}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
