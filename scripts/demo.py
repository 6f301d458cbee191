"""`make run`: a simulated unit records a scripted incident, then the evidence is verified.

About a minute: the unit boots with simulated sensors and buffers; the record button is
pressed (the 30 s pre-event buffer becomes the start of the recording), two marks are made,
the button is pressed again to stop, and the agent shuts down cleanly. Then the evidence
is verified with public keys only, and the exact commands to verify and decrypt it are
printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
import subprocess
import sys
import types
from pathlib import Path

from agent.config import SensorConfig, load_config, render_config
from agent.daemon import SIM_DEVICE_ID, ensure_dev_provisioned

# seconds after start: button (start), mark, mark, button (stop)
INCIDENT = "35:record,42:mark,50:mark,58:record"
DURATION_S = 63


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=Path("run-data"))
    parser.add_argument("--duration", type=float, default=DURATION_S)
    parser.add_argument("--script", default=INCIDENT, help="simulated button presses, e.g. 5:record,9:mark,15:record")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    data: Path = args.data_dir
    bindir = Path(sys.executable).parent

    ensure_dev_provisioned(data, SIM_DEVICE_ID)
    config = load_config(data / "bodycam.toml")
    inputs = SensorConfig(driver="sim", enabled=True, options=types.MappingProxyType({"script": args.script}))
    demo_cfg = data / "demo.toml"
    demo_cfg.write_text(render_config(dataclasses.replace(config, inputs=inputs)))

    print(f"\n== bodycam demo: a simulated unit records a scripted incident ({args.script}) ==\n", flush=True)
    run = subprocess.run(
        [
            str(bindir / "bodycam"),
            "run",
            "--sim",
            "--data-dir",
            str(data),
            "--config",
            str(demo_cfg),
            "--duration",
            str(args.duration),
        ],
        check=False,
    )
    if run.returncode != 0:
        print(f"\nthe agent exited with {run.returncode}", file=sys.stderr)
        return run.returncode

    bodycam = shutil.which("bodycam", path=str(bindir)) or "bodycam"
    verify = [bodycam, "verify", str(data), "--device-pub", str(data / "device.pub")]
    print("\n== verifying the evidence with public keys only ==\n", flush=True)
    result = subprocess.run(verify, check=False)
    hq_key = data / "dev-hq" / "hq.key"
    entries = len(list((data / "segments").glob("*.bcs")))
    print(
        f"""
== done ==
Evidence:  {data / "segments"} ({entries} entries, encrypted to headquarters' key, signed, hash-chained)
Verify (public keys only, what a court runs):
  {" ".join(verify)}
Verify and decrypt the content too (needs headquarters' private key; here the development one):
  {" ".join(verify)} --hq-key {hq_key}
Decrypt to playable Matroska files and JSON manifests:
  {bindir / "bodycam-hq"} decrypt {data / "segments"}/*.bcs --key {hq_key} --out {data / "decrypted"}
  ffprobe {data / "decrypted"}/<seq>.mkv   # or play it with ffplay / VLC
""",
        flush=True,
    )
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
