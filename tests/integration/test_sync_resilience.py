"""Sync under real failures: a proxy that cuts connections at random offsets, and a sync process
killed with SIGKILL mid-upload and started again. The evidence always arrives byte for byte,
resumes where headquarters is, and only a verified receipt acknowledges it."""

from __future__ import annotations

import dataclasses
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import SyncConfig
from agent.evidence.keys import FileKeyStore, generate_device_key, public_pem
from agent.store import Store
from agent.sync.client import Timeouts
from agent.sync.policy import Backoff
from agent.sync.worker import SyncSettings, SyncWorker
from drivers.system_clock import SystemClock
from tests.evidence_util import ChainBuilder
from tests.unit.test_sync_support import CuttingProxy, FakeHq, index_file, make_pki, wait_for

CHUNK = 256 * 1024


@pytest.fixture
def unit(tmp_path: Path) -> Iterator[tuple[Path, Store, ChainBuilder, FakeHq, Path]]:
    data = tmp_path / "unit"
    data.mkdir()
    generate_device_key(data / "device.key", data / "device.pub")
    signer = FileKeyStore(data / "device.key")
    chain = ChainBuilder(data / "segments", signer=signer, device_id="unit-int-1")  # type: ignore[arg-type]
    store = Store(data / "index.sqlite", SystemClock())
    pki = make_pki(tmp_path / "pki")
    hq = FakeHq(pki, {chain.device_id: signer.public_key()})
    (data / "receipt.pub").write_bytes(public_pem(hq.receipt_key.public_key()))
    yield data, store, chain, hq, pki.ca_pem
    hq.close()
    store.close()


def test_random_cuts_through_a_proxy_still_deliver_identical_bytes(unit: tuple[Path, Store, ChainBuilder, FakeHq, Path]
                                                                   ) -> None:
    data, store, chain, hq, ca = unit
    rng = random.Random(20261122)
    seqs = [index_file(store, chain.event("boot"))]
    seqs += [index_file(store, chain.segment(payload=rng.randbytes(700_000))) for _ in range(4)]
    proxy = CuttingProxy(hq.port, rng, cuts=12, max_bytes=900_000)
    settings = SyncSettings(interval_s=0.05, chunk_bytes=CHUNK, backoff=Backoff(0.02, 0.2),
                            timeouts=Timeouts(2.0, 5.0, 5.0))
    worker = SyncWorker(store, data, chain.signer, chain.device_id, proxy.url, ca, hq.receipt_key.public_key(),
                        SystemClock(), settings, lambda: {}, rng=random.Random(1))
    worker.start()
    try:
        assert wait_for(lambda: all(store.segment(s).state == "acknowledged" for s in seqs),  # type: ignore[union-attr]
                        60.0), worker.get_status()
    finally:
        worker.stop()
        proxy.close()
    cut_connections = 12 - proxy.cuts_left
    for seq in seqs:
        seg = store.segment(seq)
        assert seg is not None and seg.receipt is not None and seg.receipt["seq"] == seq
        assert hq.evidence[(chain.device_id, seq)] == (data / seg.path).read_bytes()
    total = sum(len(hq.evidence[(chain.device_id, s)]) for s in seqs)
    received = sum(u.received_bytes for u in hq.uploads.values())
    # A cut can only waste the chunk in flight (cuts during TLS set-up or a heartbeat waste none).
    assert total <= received <= total + cut_connections * CHUNK
    errors = [a for a in store.audit_tail(1000) if a.actor == "sync" and a.action == "upload-error"]
    assert len(errors) >= 3 and all(a.outcome == "failed" for a in errors)  # the cuts really hit uploads


CHILD = """
import sys, time, logging
from pathlib import Path
from agent.evidence.keys import FileKeyStore, load_device_public
from agent.store import Store
from agent.sync.client import Timeouts
from agent.sync.policy import Backoff
from agent.sync.worker import SyncSettings, SyncWorker
from drivers.system_clock import SystemClock
logging.basicConfig(level=logging.INFO)
data, url, ca, device_id, bps = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), sys.argv[4], int(sys.argv[5])
clock = SystemClock()
store = Store(data / "index.sqlite", clock)
settings = SyncSettings(interval_s=0.05, chunk_bytes=65536, bandwidth_bps=bps, backoff=Backoff(0.02, 0.2),
                        timeouts=Timeouts(2.0, 5.0, 5.0))
worker = SyncWorker(store, data, FileKeyStore(data / "device.key"), device_id, url, ca,
                    load_device_public(data / "receipt.pub"), clock, settings, lambda: {})
worker.start()
time.sleep(120)
"""


def test_sync_process_killed_mid_upload_resumes_the_same_upload(unit: tuple[Path, Store, ChainBuilder, FakeHq, Path]
                                                               ) -> None:
    data, store, chain, hq, ca = unit
    seq = index_file(store, chain.segment(payload=random.Random(3).randbytes(1_500_000)))
    size = (data / store.segment(seq).path).stat().st_size  # type: ignore[union-attr]

    def child(bps: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-c", CHILD, str(data), hq.url, str(ca), chain.device_id, str(bps)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    slow = child(4_000_000)  # 500 kB/s: about three seconds for the file
    try:
        assert wait_for(lambda: (u := hq.upload_for(seq)) is not None and len(u.data) >= 600_000, 30.0)
    finally:
        slow.send_signal(signal.SIGKILL)  # power cut, as far as the sync process knows
        slow.wait(10)
    up = hq.upload_for(seq)
    assert up is not None and len(up.data) < size
    assert store.segment(seq).state == "uploading"  # type: ignore[union-attr]
    creates = sum(1 for m, p in hq.requests if m == "POST" and p.startswith("/v1/uploads"))
    fast = child(0)
    try:
        assert wait_for(lambda: store.segment(seq).state == "acknowledged", 30.0)  # type: ignore[union-attr]
    finally:
        fast.send_signal(signal.SIGKILL)
        fast.wait(10)
    assert hq.evidence[(chain.device_id, seq)] == (data / store.segment(seq).path).read_bytes()  # type: ignore[union-attr]
    assert sum(1 for m, p in hq.requests if m == "POST" and p.startswith("/v1/uploads")) == creates
    assert len(hq.uploads) == 1 and up.received_bytes <= size + 65536
    starts = [a.detail for a in store.audit_tail(100) if a.actor == "sync" and a.action == "upload-start"]
    assert starts[0]["resumed"] is False and starts[-1]["resumed"] is True and starts[-1]["offset"] > 0


def test_a_trickling_headquarters_is_given_up_at_the_configured_deadline(
        unit: tuple[Path, Store, ChainBuilder, FakeHq, Path]) -> None:
    data, store, chain, hq, ca = unit
    seq = index_file(store, chain.event("boot"))
    # Every answer one byte per 50 ms: no read ever waits long, so only the overall deadline
    # (from the unit's [sync] settings) ends each request.
    sync = dataclasses.replace(SyncConfig(), interval_s=0.1, io_timeout_s=5.0, request_deadline_s=0.5,
                               backoff_max_s=1.0)
    hq.faults.trickle_s = 0.05
    worker = SyncWorker(store, data, chain.signer, chain.device_id, hq.url, ca, hq.receipt_key.public_key(),
                        SystemClock(), SyncSettings.from_config(sync), lambda: {}, rng=random.Random(2))

    def last_error() -> str:
        return str((worker.get_status()["last_error"] or {}).get("message"))

    worker.start()
    try:
        assert wait_for(lambda: "within the 0.5 s deadline" in last_error(), 20.0), worker.get_status()
        assert worker.get_status()["state"] == "backoff"
        assert store.segment(seq).state != "acknowledged"  # type: ignore[union-attr]
        hq.faults.trickle_s = 0.0
        assert wait_for(lambda: store.segment(seq).state == "acknowledged", 30.0), worker.get_status()  # type: ignore[union-attr]
    finally:
        worker.stop()
    assert hq.trickled and all(sent < whole for sent, whole in hq.trickled), hq.trickled
