"""The transparency log end to end: a unit syncs to a real headquarters that a real witness
cosigns; receipts carry inclusion proofs the unit keeps; the log is served as c2sp.org/tlog-tiles;
then a test rewrites headquarters' log, and both the unit and the witness detect the fork."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import ssl
import urllib.error
import urllib.request
from pathlib import Path

from agent.config import load_config, render_config
from agent.evidence import merkle, note
from agent.evidence.keys import load_device_public, load_receipt_private
from agent.evidence.tlogproof import leaf_kind
from agent.evidence.verify import check_file
from agent.store import Store
from hq.db.engine import make_engine, parse_url
from hq.index import SqlIndex
from hq.tlog import Leaf, SqlLog
from tests.fakes import FakeClock
from tests.integration.agent_util import AgentProcess, run_cli
from tests.integration.hq_util import HqProcess, ServingProcess, hq_keygen, provision_for_hq, wait_until

TLOG_TABLES = ("tlog_entries", "tlog_nodes", "tlog_checkpoints", "tlog_cosignatures")


class WitnessProcess(ServingProcess):
    def __init__(self, data: Path, log_vkey: str) -> None:
        super().__init__(["witness", "serve", "--data-dir", str(data), "--listen", "127.0.0.1:0", "--log", log_vkey],
                         data / "witness.log", "http")


def _hq(*args: str) -> str:
    res = run_cli("hq", *args)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def _get(url: str, ca: Path) -> bytes:
    with urllib.request.urlopen(url, context=ssl.create_default_context(cafile=str(ca)), timeout=30) as resp:
        return bytes(resp.read())


def _rewrite_log(hq_dir: Path, extra_leaves: int) -> None:
    """What someone holding headquarters' database and key could do: drop the append-only
    triggers, replace the log's history and sign the new one with the same key."""
    conn = sqlite3.connect(str(hq_dir / "index.sqlite"), isolation_level=None)
    try:
        size = conn.execute("SELECT count(*) FROM tlog_entries").fetchone()[0]
        for table in TLOG_TABLES:
            for verb in ("update", "delete"):
                conn.execute(f"DROP TRIGGER {table}_no_{verb}")
            conn.execute(f"DELETE FROM {table}")
    finally:
        conn.close()
    index = SqlIndex(make_engine(parse_url(f"sqlite:///{hq_dir / 'index.sqlite'}")), auto_migrate=True)
    try:
        key = load_receipt_private(hq_dir / "keys" / "receipt.key")
        origin = _hq("tlog", "vkey", "--data-dir", str(hq_dir)).split("+")[0]
        log = SqlLog(index.engine, origin, key)
        log.append([Leaf("receipt", "rewritten", i, b"a history that never was %d" % i)
                    for i in range(size + extra_leaves)], now_ns=1)
    finally:
        index.close()


def test_receipts_are_proven_the_log_is_served_and_a_rewrite_is_detected(tmp_path: Path) -> None:
    hq_dir, unit, wdir = tmp_path / "hq", tmp_path / "unit", tmp_path / "witness"
    hq_keygen(hq_dir)
    log_vkey = _hq("tlog", "vkey", "--data-dir", str(hq_dir))
    witness_vkey = _hq("witness", "keygen", "--data-dir", str(wdir), "--name", "court.test/witness")
    witness = WitnessProcess(wdir, log_vkey)
    hq_args = ("--witness", f"{witness.url}={witness_vkey}", "--units-need-cosigned", "--maintain-interval-s", "1")
    hq = HqProcess(hq_dir, *hq_args)
    port = hq.url.rsplit(":", 1)[1]
    agent = None
    try:
        cfg_path = provision_for_hq(unit, hq_dir, hq.url, "it-tlog-1")
        cfg = load_config(cfg_path)
        cfg = dataclasses.replace(cfg, sync=dataclasses.replace(cfg.sync, tlog_witnesses=(witness_vkey,),
                                                                tlog_witness_quorum=1))
        cfg_path.write_text(render_config(cfg))
        agent = AgentProcess(unit, cfg_path)
        agent.wait_ready()
        assert agent.ctl("start")["ok"]
        wait_until(lambda: _acknowledged(unit) >= 2, 60, "two entries acknowledged")
        assert agent.ctl("stop")["ok"]
        # the unit takes a checkpoint only once the witness cosigned one (quorum 1)
        wait_until(lambda: (agent.ctl("status")["data"]["sync"]["tlog"] or {}).get("size", 0) > 0, 60,
                   "the unit to verify a cosigned checkpoint")

        with Store(unit / "index.sqlite", FakeClock()) as store:
            acked = [r for r in store.segments() if r.state == "acknowledged"]
        assert acked and all("tlog" in r.receipt for r in acked if r.receipt), "receipts kept without proofs"
        assert (unit / "tlog-checkpoint").is_file()

        # the log as static tiles: the checkpoint verifies (log key and the witness's cosignature),
        # the level-0 tile's hashes rebuild its root, the entries hash to the tile
        ca = hq_dir / "keys" / "ca.pem"
        signed = _get(f"{hq.url}/tlog/checkpoint", ca).decode()
        opened = note.open_checkpoint(signed, note.parse_vkey(log_vkey), [note.parse_vkey(witness_vkey)])
        cp = opened.checkpoint
        assert 0 < cp.size < 256
        tile = _get(f"{hq.url}/tlog/tile/0/000.p/{cp.size}", ca)
        hashes = [tile[i:i + 32] for i in range(0, len(tile), 32)]
        tree = merkle.MemoryTree()
        for h in hashes:
            tree.append_hash(h)
        assert tree.root() == cp.root
        bundle = _get(f"{hq.url}/tlog/tile/entries/000.p/{cp.size}", ca)
        entries, at = [], 0
        while at < len(bundle):
            n = int.from_bytes(bundle[at:at + 2], "big")
            entries.append(bundle[at + 2:at + 2 + n])
            at += 2 + n
        assert [merkle.leaf_hash(e) for e in entries] == hashes
        assert {leaf_kind(e) for e in entries} == {"receipt", "chain-head"}
        # a tile the tree does not have is not served
        try:
            _get(f"{hq.url}/tlog/tile/0/001", ca)
            raise AssertionError("a tile beyond the tree was served")
        except urllib.error.HTTPError as exc:
            assert exc.code == 404

        # a court export carries the receipts' proofs; verify checks them offline, witness included
        out = tmp_path / "export"
        _hq("export", "--data-dir", str(hq_dir), "--device", "it-tlog-1", "--out", str(out))
        verify = ("verify", str(out), "--device-pub", str(out / "device.pub"), "--json", "--log-key", log_vkey,
                  "--witness", witness_vkey, "--witness-quorum", "1")
        res = run_cli(*verify)
        doc = json.loads(res.stdout)
        assert res.returncode == 0 and doc["ok"], doc["problems"]
        assert doc["tlog"]["receipts_proven"] == len(list((out / "tlog").glob("0*.proof"))) >= 2
        assert doc["tlog"]["cosigned_by"] == ["court.test/witness"]
        proof = sorted((out / "tlog").glob("0*.proof"))[0]
        data = json.loads(proof.read_text())
        data["index"] = data["index"] + 1  # the receipt claimed at another place in the log
        proof.write_text(json.dumps(data, separators=(",", ":"), sort_keys=True))
        res = run_cli(*verify)
        doc = json.loads(res.stdout)
        assert res.returncode == 1 and any("not proven in the log" in p["reason"] for p in doc["problems"])

        # headquarters rewrites its log (same key, a different history) and comes back on its port
        hq.stop()
        _rewrite_log(hq_dir, extra_leaves=5)
        hq = HqProcess(hq_dir, *hq_args, listen=f"127.0.0.1:{port}")

        def unit_saw_fork() -> bool:
            return bool(agent.ctl("status")["data"]["sync"]["tlog_fork"])  # type: ignore[union-attr]

        wait_until(unit_saw_fork, 60, "the unit to detect the rewritten log")
        sync = agent.ctl("status")["data"]["sync"]
        assert sync["tlog_fork"].startswith("fork"), sync
        assert list((unit / "tlog-forks").iterdir()), "the unit kept no proof of the fork"
        wait_until(lambda: (wdir / "forks").is_dir() and any((wdir / "forks").iterdir()), 60,
                   "the witness to refuse and keep the rewritten checkpoint")
        assert "not consistent" in (wdir / "witness.log").read_text()
        agent.terminate()
        assert agent.wait(60) == 0, agent.log()
        agent = None
    finally:
        if agent is not None:
            agent.terminate()
        hq.stop()
        witness.stop()

    # the fork is a signed event in the unit's own chain, which still verifies
    res = run_cli("verify", str(unit), "--device-pub", str(unit / "device.pub"), "--json")
    assert res.returncode == 0, res.stdout
    pub = load_device_public(unit / "device.pub")
    events = [check_file(f, pub)[0].signed for f in sorted((unit / "segments").glob("*.bcs"))]
    alarms = [json.dumps(s.manifest) for s in events if s is not None and s.manifest.get("event") == "sync-alarm"]
    assert any("tlog-fork" in a for a in alarms), alarms
    with Store(unit / "index.sqlite", FakeClock()) as store:
        assert any(a.action == "tlog-fork" for a in store.audit_tail(1000))


def _acknowledged(unit: Path) -> int:
    with Store(unit / "index.sqlite", FakeClock()) as store:
        return sum(r.state == "acknowledged" for r in store.segments())

