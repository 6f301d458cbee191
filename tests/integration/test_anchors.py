"""Anchors end to end: a unit syncs to a real headquarters, the court export carries a signed
heartbeat and a receipt as anchors, and cutting the tail off the export is caught by name."""

from __future__ import annotations

import json
import time
from pathlib import Path

from agent.store import Store
from tests.fakes import FakeClock
from tests.integration.agent_util import AgentProcess, run_cli
from tests.integration.hq_util import HqProcess, hq_keygen, provision_for_hq, wait_until


def _verify(out: Path, *extra: str) -> tuple[int, dict[str, object]]:
    res = run_cli("verify", str(out), "--device-pub", str(out / "device.pub"), "--json", *extra)
    return res.returncode, json.loads(res.stdout)


def test_export_anchors_catch_entries_cut_off_the_end(tmp_path: Path) -> None:
    hq_dir, unit = tmp_path / "hq", tmp_path / "unit"
    hq_keygen(hq_dir)
    hq = HqProcess(hq_dir)
    try:
        cfg = provision_for_hq(unit, hq_dir, hq.url, "it-anchor-1")
        agent = AgentProcess(unit, cfg)
        agent.wait_ready()
        assert agent.ctl("start")["ok"]
        time.sleep(8)
        assert agent.ctl("stop")["ok"]

        def synced() -> bool:
            with Store(unit / "index.sqlite", FakeClock()) as store:
                return all(r.state == "acknowledged" for r in store.segments())

        wait_until(synced, 60, "the backlog to reach headquarters")
        with Store(unit / "index.sqlite", FakeClock()) as store:
            last = max(r.seq for r in store.segments())
        # a heartbeat sent after the last receipt carries the chain head headquarters now holds
        time.sleep(6)
        agent.terminate()
        assert agent.wait(60) == 0, agent.log()
    finally:
        hq.stop()

    out = tmp_path / "export"
    res = run_cli("hq", "export", "--data-dir", str(hq_dir), "--device", "it-anchor-1", "--out", str(out))
    assert res.returncode == 0, res.stderr
    meta = json.loads((out / "export.json").read_text())
    kinds = {a["kind"]: a["through_seq"] for a in meta["anchors"]}
    assert set(kinds) == {"heartbeat", "receipt"}, meta["anchors"]
    assert kinds["receipt"] == last and kinds["heartbeat"] == last
    anchors = [str(out / "anchors" / a["file"]) for a in meta["anchors"]]

    code, doc = _verify(out, "--anchor", *anchors)
    assert code == 0 and doc["ok"], doc["problems"]
    assert doc["anchored_through"] == last
    # the transparency log vouches for both anchors too: headquarters logged what it received
    assert doc["tlog"]["heartbeats_proven"] == 1, doc["tlog"]
    assert doc["tlog"]["receipts_proven"] == len(list((out / "receipts").glob("*.receipt"))) >= 2

    # the tail of the export is deleted: without anchors the set still verifies (its end unproven) ...
    cut = sorted(out.glob("*.bcs"))[-2:]
    for f in cut:
        f.unlink()
    code, doc = _verify(out)
    assert code == 0 and doc["end_proven"] is False
    # ... with them, verification fails naming exactly the missing entries
    code, doc = _verify(out, "--anchor", *anchors)
    assert code == 1 and not doc["ok"]
    missing = f"seq {last - 1}-{last} (2 entries)"
    reasons = [p["reason"] for p in doc["problems"]]  # type: ignore[attr-defined]
    assert sum(missing in r for r in reasons) == 2, reasons  # both the heartbeat and the receipt say so
    text = run_cli("verify", str(out), "--device-pub", str(out / "device.pub"), "--anchor", *anchors)
    assert text.returncode == 1 and missing in text.stdout and "RESULT: FAILED" in text.stdout
