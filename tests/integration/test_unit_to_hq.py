"""A simulated unit records, syncs to a real headquarters over TLS on loopback, and gets verified receipts."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from agent import __version__
from agent.store import Store
from hq.app import open_index
from tests.fakes import FakeClock
from tests.integration.agent_util import AgentProcess, run_cli
from tests.integration.hq_util import HqProcess, hq_keygen, provision_for_hq, wait_until


def test_record_sync_receipts_and_export_verify(tmp_path: Path) -> None:
    hq_dir, unit = tmp_path / "hq", tmp_path / "unit"
    hq_keygen(hq_dir)
    hq = HqProcess(hq_dir)
    try:
        cfg = provision_for_hq(unit, hq_dir, hq.url, "it-sync-1")
        agent = AgentProcess(unit, cfg)
        agent.wait_ready()
        assert agent.ctl("start")["ok"]
        time.sleep(7)
        assert agent.ctl("mark", note="at the door")["ok"]
        assert agent.ctl("stop")["ok"]

        def synced() -> bool:
            with Store(unit / "index.sqlite", FakeClock()) as store:
                return all(r.state == "acknowledged" for r in store.segments())

        wait_until(synced, 60, "the backlog to reach headquarters")
        sync = agent.ctl("status")["data"]["sync"]
        assert sync["last_receipt"] is not None and sync["alarm"] is None
        agent.terminate()
        assert agent.wait(60) == 0, agent.log()
    finally:
        hq.stop()

    # every entry of the unit (but the shutdown event written after sync stopped) is acknowledged
    with Store(unit / "index.sqlite", FakeClock()) as store:
        rows = store.segments()
    acked = [r for r in rows if r.state == "acknowledged"]
    assert len(acked) >= len(rows) - 1 and any(r.kind == "segment" for r in acked)
    assert all(r.receipt for r in acked)

    # the heartbeats told headquarters what its operations room shows (sync protocol 1.4)
    with open_index(hq_dir) as index:
        device = index.device("it-sync-1")
    assert device is not None and device.last_status is not None
    status = device.last_status
    assert status["firmware"] == __version__ and len(status["config_sha256"]) == 64
    assert status["sensors"] and all(s["state"] in ("running", "starting") for s in status["sensors"].values())
    assert {"source", "synced"} <= set(status["time"])

    # headquarters holds the same bytes
    listing = json.loads(run_cli("hq", "evidence", "list", "--data-dir", str(hq_dir), "--json").stdout)
    held = {e["seq"] for e in (listing["evidence"] if isinstance(listing, dict) else listing)}
    assert {r.seq for r in acked} <= held
    for r in acked:
        mine = hashlib.sha256((unit / r.path).read_bytes()).hexdigest()
        theirs = hashlib.sha256((hq_dir / "evidence" / "it-sync-1" / f"{r.seq:010d}.bcs").read_bytes()).hexdigest()
        assert mine == theirs

    # what a court gets: the export verifies with public keys only
    out = tmp_path / "export"
    res = run_cli("hq", "export", "--data-dir", str(hq_dir), "--device", "it-sync-1", "--out", str(out))
    assert res.returncode == 0, res.stderr
    ver = run_cli("verify", str(out), "--device-pub", str(out / "device.pub"), "--json")
    doc = json.loads(ver.stdout)
    assert doc["ok"], doc["problems"]
