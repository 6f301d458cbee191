"""Faults during a shift, with the invariants of the power-cut issue checked after each."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from agent.store import Store
from tests.fakes import FakeClock
from tests.gpsd_util import Gpsd
from tests.hil.rig import Headquarters, NmeaFeeder, Unit, make_unit, wait_for
from tests.integration.agent_util import run_cli


def invariants(unit: Unit) -> dict[str, object]:
    """SQLite intact; the chain verifies, every gap explained by a signed event."""
    with Store(unit.data / "index.sqlite", FakeClock()) as store:
        integrity = store.integrity_check()
    assert integrity == "ok"
    out = run_cli("verify", str(unit.data), "--device-pub", str(unit.data / "device.pub"), "--json")
    doc: dict[str, object] = json.loads(out.stdout)
    assert doc["ok"], doc["problems"]
    return doc


def test_faults_during_a_shift(
    tmp_path: Path, hq: Headquarters, gpsd: Gpsd, feeder: NmeaFeeder, step: Callable[..., None]
) -> None:
    """sensor failure, GNSS lost in a tunnel, headquarters unreachable, the agent killed, a nearly full disk."""
    hq.up()
    unit = make_unit(tmp_path, hq, gpsd, "hil-faults-1", thermal={"fail_after_s": 8.0})
    t0 = time.monotonic()
    unit.start()
    unit.wait_ready(t0)
    wait_for(lambda: (unit.status()["gnss"] or {}).get("mode", 0) >= 2, 30, "a GNSS fix")
    assert unit.ctl("start")["ok"]

    # a sensor fails: it is reopened, the others keep recording, both transitions are signed
    wait_for(lambda: "sensor-recovered" in unit.events(), 40, "the thermal camera to fail and recover")
    st = unit.status()
    assert st["sensors"]["thermal"]["restarts"] >= 1 and st["state"] == "recording"
    assert st["dropped"]["chest"] == 0
    step("thermal camera failed and was reopened; recording went on", restarts=st["sensors"]["thermal"]["restarts"])

    # GNSS lost in a tunnel, then back
    feeder.in_tunnel.set()
    wait_for(lambda: (unit.status()["gnss"] or {}).get("mode") == 1, 20, "the fix to be lost")
    step("GNSS fix lost in the tunnel", mode=1)
    feeder.in_tunnel.clear()
    wait_for(lambda: (unit.status()["gnss"] or {}).get("mode", 0) >= 2, 20, "the fix to come back")
    step("GNSS fix back after the tunnel")

    # headquarters unreachable for a while, then back: the backlog drains
    hq.down()
    time.sleep(6)
    backlog = unit.status()["sync"]["backlog"]["entries"]
    assert backlog > 0 and not unit.status()["sync"]["connected"]
    hq.up()
    wait_for(lambda: unit.status()["sync"]["backlog"]["entries"] <= 1, 60, "the backlog to drain")
    step("headquarters was unreachable, then the backlog drained", backlog_at_worst=backlog)

    # the agent is killed while recording; restarted (systemd's Restart=on-failure), it recovers first
    sealed_before = {p.name: p.read_bytes() for p in (unit.data / "segments").glob("*.bcs")}
    unit.kill()
    t1 = time.monotonic()
    unit.start()
    ready_s = unit.wait_ready(t1)
    # it was recording when it died: it records again (the resume is queued behind READY)
    wait_for(lambda: unit.status()["state"] == "recording", 10, "the recording to resume")
    for name, data in sealed_before.items():
        assert (unit.data / "segments" / name).read_bytes() == data
    assert "recovered-after-power-loss" in unit.events()
    step("killed while recording: restarted, recovered before READY, recording resumed", ready_s=round(ready_s, 2))
    time.sleep(3)
    assert unit.ctl("stop")["ok"]
    assert unit.stop() == 0, unit.log()
    doc = invariants(unit)
    step("invariants hold: SQLite intact, chain verifies", entries=doc["segments"], warnings=len(doc["warnings"]))

    # a nearly full disk: thresholds above the free space; the pre-event buffer is given up,
    # new recordings are refused with a clear message, and only acknowledged footage is freed
    cfg = unit.config.read_text()
    huge = 1 << 60
    unit.config.write_text(
        cfg.replace("warn_free_bytes = 67108864", f"warn_free_bytes = {huge}")
        .replace("critical_free_bytes = 50331648", f"critical_free_bytes = {huge}")
        .replace("full_free_bytes = 33554432", f"full_free_bytes = {huge}")
    )
    files_before = set((unit.data / "segments").glob("*.bcs"))
    t2 = time.monotonic()
    unit.start()
    unit.wait_ready(t2)
    wait_for(lambda: unit.status()["storage_level"] == "full", 30, "the storage level to be full")
    refused = unit.ctl("start")
    assert not refused["ok"] and "storage full" in refused["error"]["message"]
    assert unit.status()["pre_event"]["buffered_packets"] == 0
    assert unit.stop() == 0, unit.log()
    gone = {p.name for p in files_before - set((unit.data / "segments").glob("*.bcs"))}
    with Store(unit.data / "index.sqlite", FakeClock()) as store:
        rows = {r.path.rsplit("/", 1)[-1]: r for r in store.segments()}
    assert all(rows[name].state == "acknowledged" and rows[name].receipt for name in gone)
    assert all(rows[name].local_deleted_utc_ns is not None for name in gone)
    assert "storage-full" in [m["event"] for m in _events_at_hq_or_unit(unit)]
    step(
        "nearly full disk: pre-event given up, new recording refused, only acknowledged footage freed", freed=len(gone)
    )


def _events_at_hq_or_unit(unit: Unit) -> list[dict[str, object]]:
    """The unit's events still on disk (freed ones were acknowledged, so headquarters has them)."""
    return [m for m in unit.manifests() if m["type"] == "event"]
