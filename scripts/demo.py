"""`make run`: a simulated unit records a scripted incident and syncs it to a local headquarters.

About a minute and a half. Headquarters (`bodycam-hq serve`) starts on 127.0.0.1 with its own
keys and CA; the unit is provisioned against it and enrolled; the agent boots on simulated
sensors and buffers; the record button is pressed (the 30 s pre-event buffer becomes the start of
the recording), two marks are made, the button is pressed again; the unit uploads everything over
TLS and gets a signed receipt per entry; then it shuts down. Finally the evidence is verified,
on the unit and as exported by headquarters, and the exact commands are printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import re
import subprocess
import sys
import types
from pathlib import Path

from agent.config import SensorConfig, load_config, render_config

# seconds after start: button (start), mark, mark, button (stop)
INCIDENT = "35:record,42:mark,50:mark,58:record"
DURATION_S = 75
DEVICE_ID = "demo-unit-1"


def sh(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=Path("run-data"))
    parser.add_argument("--duration", type=float, default=DURATION_S)
    parser.add_argument("--script", default=INCIDENT, help="simulated button presses, e.g. 5:record,9:mark,15:record")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    bindir = Path(sys.executable).parent
    bodycam, bodycam_hq = str(bindir / "bodycam"), str(bindir / "bodycam-hq")
    root: Path = args.data_dir
    unit, hq = root / "unit", root / "hq"

    print("\n== headquarters: keys, CA and the sync service on 127.0.0.1 ==\n", flush=True)
    if not (hq / "keys" / "hq.key").exists():
        res = sh(bodycam_hq, "keygen", "--data-dir", str(hq))
        print(res.stdout, res.stderr, sep="", end="", flush=True)
        if res.returncode:
            return res.returncode
    hq_log = (root / "hq.log").open("ab")
    server = subprocess.Popen(
        [bodycam_hq, "serve", "--data-dir", str(hq), "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=hq_log
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline().decode()
        m = re.search(r"https://127\.0\.0\.1:(\d+)", line)
        if m is None:
            print(f"headquarters did not start: {line!r} (see {root / 'hq.log'})", file=sys.stderr)
            return 1
        url = m.group(0)
        print(line.strip(), flush=True)
        code = run_unit(args, bodycam, bodycam_hq, unit, hq, url)
    finally:
        server.terminate()
        server.wait(30)
        hq_log.close()
    return code


def run_unit(args: argparse.Namespace, bodycam: str, bodycam_hq: str, unit: Path, hq: Path, url: str) -> int:
    if not (unit / "device.key").exists():
        print("\n== the unit: identity key, headquarters' public keys and CA, enrolment ==\n", flush=True)
        res = sh(
            bodycam,
            "provision",
            "--data-dir",
            str(unit),
            "--device-id",
            DEVICE_ID,
            "--hq-pub",
            str(hq / "keys" / "hq.pub"),
            "--hq-url",
            url,
            "--hq-ca",
            str(hq / "keys" / "ca.pem"),
        )
        print(res.stdout, res.stderr, sep="", end="", flush=True)
        if res.returncode:
            return res.returncode
        res = sh(
            bodycam_hq,
            "enroll",
            "--data-dir",
            str(hq),
            "--device-id",
            DEVICE_ID,
            "--device-pub",
            str(unit / "device.pub"),
        )
        print(res.stdout, res.stderr, sep="", end="", flush=True)
        if res.returncode:
            return res.returncode
    config = load_config(unit / "bodycam.toml")
    inputs = SensorConfig(driver="sim", enabled=True, options=types.MappingProxyType({"script": args.script}))
    demo = dataclasses.replace(
        config,
        hq=dataclasses.replace(config.hq, url=url),  # this run's port
        inputs=inputs,
        sync=dataclasses.replace(config.sync, interval_s=2.0, heartbeat_s=10.0),
    )
    demo_cfg = unit / "demo.toml"
    demo_cfg.write_text(render_config(demo))

    print(f"\n== the unit records a scripted incident ({args.script}) and syncs it ==\n", flush=True)
    agent = subprocess.Popen(
        [bodycam, "run", "--sim", "--data-dir", str(unit), "--config", str(demo_cfg), "--duration", str(args.duration)]
    )
    code = agent.wait()
    if code != 0:
        print(f"\nthe agent exited with {code}", file=sys.stderr)
        return code
    return report(bodycam, bodycam_hq, unit, hq)


def report(bodycam: str, bodycam_hq: str, unit: Path, hq: Path) -> int:
    print("\n== what headquarters received ==\n", flush=True)
    res = sh(bodycam_hq, "evidence", "list", "--data-dir", str(hq), "--device", DEVICE_ID)
    print(res.stdout, res.stderr, sep="", end="", flush=True)
    export = unit.parent / "export"
    sh(bodycam_hq, "export", "--data-dir", str(hq), "--device", DEVICE_ID, "--out", str(export))

    print("\n== verifying, with public keys only: on the unit, then headquarters' export ==\n", flush=True)
    on_unit = subprocess.run([bodycam, "verify", str(unit), "--device-pub", str(unit / "device.pub")], check=False)
    exported = subprocess.run([bodycam, "verify", str(export), "--device-pub", str(export / "device.pub")], check=False)
    hq_key = hq / "keys" / "hq.key"
    print(
        f"""
== done ==
On the unit:   {unit / "segments"} (encrypted to headquarters' key, signed, hash-chained)
At HQ:         {hq / "evidence" / DEVICE_ID}   export for a court: {export}
Verify (public keys only, what a court runs):
  {bodycam} verify {export} --device-pub {export / "device.pub"}
  {bodycam} verify {unit} --device-pub {unit / "device.pub"}
Verify and decrypt the content too (headquarters' private key):
  {bodycam} verify {export} --device-pub {export / "device.pub"} --hq-key {hq_key}
Decrypt to playable Matroska files and JSON manifests:
  {bodycam_hq} decrypt {export}/*.bcs --key {hq_key} --out {unit.parent / "decrypted"}
The unit's own view:  {bodycam} ctl --data-dir {unit} status   (while it runs)
""",
        flush=True,
    )
    return on_unit.returncode or exported.returncode


if __name__ == "__main__":
    sys.exit(main())
