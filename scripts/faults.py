"""`make faults`: the power-cut, double-start and full-disk harnesses with many trials; prints JSON
figures (no thresholds). The full-disk trials need root (they mount a small tmpfs); without it
their section says why they were skipped."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.integration.diskfill import mount_problem, run_disk_harness  # noqa: E402
from tests.integration.doublestart import run_double_start  # noqa: E402
from tests.integration.killharness import run_harness  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=25)
    parser.add_argument("--race-trials", type=int, default=10, help="second agents started beside a recording one")
    parser.add_argument("--disk-trials", type=int, default=8, help="disk filled suddenly at random moments")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="bodycam-faults-") as tmp:
        result = run_harness(Path(tmp) / "unit", trials=args.trials, seed=args.seed)
        race = run_double_start(Path(tmp) / "race", trials=args.race_trials, seed=args.seed)
        skipped = mount_problem()
        disk = None if skipped else run_disk_harness(Path(tmp) / "disk", trials=args.disk_trials, seed=args.seed)
    doc = {
        "power_cut": result.figures(),
        "trials": [asdict(t) for t in result.trials],
        "double_start": race.figures(),
        "double_start_trials": [asdict(t) for t in race.trials],
        "disk_full": {"skipped": skipped} if disk is None else disk.figures(),
        "disk_full_trials": [] if disk is None else [asdict(t) for t in disk.trials],
    }
    print(json.dumps(doc, indent=2))
    power_ok = doc["power_cut"]["segments_lost"] == 0 and doc["power_cut"]["final_verify_ok"]
    race_ok = race.sealed_lost_or_rewritten == 0 and bool(race.final_verify.get("ok"))
    disk_ok = disk is None or (disk.figures()["sealed_lost_or_rewritten"] == 0
                               and disk.figures()["unexplained_gaps"] == 0 and bool(disk.final_verify.get("ok")))
    return 0 if power_ok and race_ok and disk_ok else 1


if __name__ == "__main__":
    sys.exit(main())
