"""A shift, start to end, on a unit started as systemd starts it."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.store import Store
from tests.fakes import FakeClock
from tests.gpsd_util import Gpsd
from tests.hil.rig import Headquarters, NmeaFeeder, make_unit, wait_for
from tests.integration.agent_util import run_cli


def test_shift_boot_incident_dock_sync_retention(
    tmp_path: Path, hq: Headquarters, gpsd: Gpsd, feeder: NmeaFeeder, step: Callable[..., None]
) -> None:
    """boot, READY=1, pre-event buffering, button, marks, stop, dock, sync, receipts, retention."""
    # the button at 6 s (3 s of pre-event by then), marks at 9 and 11 s, the button again at 15 s
    unit = make_unit(
        tmp_path, hq, gpsd, "hil-shift-1", script="6:record,9:mark,11:mark,15:record", keep_acknowledged_s=0.0
    )
    t0 = time.monotonic()
    unit.start()
    ready_s = unit.wait_ready(t0)
    step("READY=1 received from the agent", ready_s=round(ready_s, 2))
    assert unit.notify is not None
    assert any("READY" in s for s in unit.notify.statuses())
    wait_for(lambda: unit.status()["gnss"] is not None and unit.status()["gnss"]["mode"] >= 2, 30, "a GNSS fix")
    step("GNSS fix through the real gpsd", lat=unit.status()["gnss"]["lat_deg"])

    wait_for(lambda: "record-stop" in unit.events(), 40, "the scripted incident to end")
    st = unit.status()
    assert st["state"] == "ready" and sum(st["dropped"].values()) == 0
    assert not st["sync"]["connected"] and st["sync"]["backlog"]["entries"] > 0  # headquarters out of reach
    assert unit.notify.seen("WATCHDOG", "1"), "the healthy main loop pings the watchdog"
    assert any("RECORDING" in s for s in unit.notify.statuses())
    segs = [m for m in unit.manifests() if m["type"] == "segment"]
    step("incident recorded while out of reach", segments=len(segs), backlog=st["sync"]["backlog"]["entries"])
    assert "pre-event" in segs[0]["flags"] and sum(len(s["marks"]) for s in segs) == 2
    assert any(s.get("sealed") for s in segs)  # GNSS fixes sealed to headquarters

    hq.up()  # docked: headquarters becomes reachable
    docked = time.monotonic()

    def all_acknowledged() -> bool:
        with Store(unit.data / "index.sqlite", FakeClock()) as store:
            return all(r.state == "acknowledged" for r in store.segments())

    wait_for(all_acknowledged, 90, "every entry to be acknowledged")
    step("docked: every entry acknowledged with a verified receipt", sync_s=round(time.monotonic() - docked, 1))

    def freed() -> bool:
        with Store(unit.data / "index.sqlite", FakeClock()) as store:
            rows = store.segments()
        return all(r.local_deleted_utc_ns is not None for r in rows if r.kind == "segment")

    wait_for(freed, 40, "local retention to free acknowledged segments")
    remaining = list((unit.data / "segments").glob("*.bcs"))
    step("retention freed the acknowledged segments; rows kept as proof", files_left=len(remaining))

    assert unit.stop() == 0, unit.log()
    assert unit.notify.seen("STOPPING", "1")
    held = hq.held("hil-shift-1")
    assert {m["seq"] for m in segs} <= held

    out = tmp_path / "export"
    res = run_cli("hq", "export", "--data-dir", str(hq.data), "--device", "hil-shift-1", "--out", str(out))
    assert res.returncode == 0, res.stderr
    ver = run_cli(
        "verify",
        str(out),
        "--device-pub",
        str(out / "device.pub"),
        "--hq-key",
        str(hq.data / "keys" / "hq.key"),
        "--json",
    )
    doc: dict[str, Any] = json.loads(ver.stdout)
    assert doc["ok"], doc["problems"]
    step("headquarters' export verifies and decrypts end to end", segments=doc["segments"], events=doc["events"])
    dec = tmp_path / "decrypted"
    first = sorted(out.glob("*.bcs"))[2]
    assert (
        run_cli("hq", "decrypt", str(first), "--key", str(hq.data / "keys" / "hq.key"), "--out", str(dec)).returncode
        == 0
    )
    probe = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name",
            "-of",
            "csv=p=0",
            str(dec / f"{first.stem}.mkv"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.split() == ["h264", "ffv1", "opus"]
    step("decrypted segment has H.264 video, FFV1 thermal and Opus audio")
