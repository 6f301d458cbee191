"""The unit's sync worker against the real headquarters service (hq/) on 127.0.0.1, port 0.

A unit provisioned with ``--hq-url`` and ``--hq-ca``, enrolled at headquarters, uploads a real
incident; headquarters verifies and stores it and the unit acknowledges each entry only on the
receipt. Then the unit is revoked: uploads stop with an alarm, nothing more is acknowledged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import random
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.config import Config, load_config, resolve_path
from agent.evidence.format import segment_filename
from agent.evidence.keys import FileKeyStore, load_hq_private, load_receipt_private, load_receipt_public
from agent.evidence.receipt import verify_heartbeat
from agent.provision import CONFIG_NAME, provision
from agent.store import Store
from agent.sync.client import AppendResult, HqClient
from agent.sync.policy import Backoff
from agent.sync.worker import SyncSettings, SyncWorker
from drivers.system_clock import SystemClock
from hq.app import build_service, open_index
from hq.cli import main as hq_main
from hq.ingest_pool import IngestSettings
from hq.keygen import keygen
from hq.serve import HqServer
from hq.service import HqService, Response
from hq.storage import EvidenceStore, UploadArea
from hq.tls import server_tls_context
from tests.evidence_util import ChainBuilder
from tests.unit.test_hq_ingest_pool import GatedStore
from tests.unit.test_sync_support import CuttingProxy, index_file

DEVICE = "unit-hq-1"


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Path, Path, HqServer]]:
    with serving(tmp_path) as started:
        yield started


@contextlib.contextmanager
def serving(tmp_path: Path, ingest: IngestSettings | None = None,
            store: Callable[[Path], EvidenceStore] | None = None) -> Iterator[tuple[Path, Path, HqServer]]:
    hq_dir, unit = tmp_path / "H", tmp_path / "unit"
    keygen(hq_dir / "keys")
    index = open_index(hq_dir)
    keys = hq_dir / "keys"
    if store is None:
        service = build_service(hq_dir, keys, index, ingest=ingest)
    else:
        service = HqService(index, store(hq_dir), UploadArea(hq_dir), load_receipt_private(keys / "receipt.key"),
                            time.time_ns, ingest=ingest)
    server = HqServer(("127.0.0.1", 0), service, server_tls_context(keys / "server.pem", keys / "server.key"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    provision(unit, DEVICE, keys / "hq.pub", hq_url=f"https://127.0.0.1:{server.port}", hq_ca=keys / "ca.pem")
    assert hq_main(["enroll", "--data-dir", str(hq_dir), "--device-id", DEVICE,
                    "--device-pub", str(unit / "device.pub")]) == 0
    try:
        yield hq_dir, unit, server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
        server.service.close()
        index.close()


def provisioned(hq_dir: Path, unit: Path) -> tuple[Config, FileKeyStore, ChainBuilder, SystemClock, Store]:
    """The provisioned unit's config, device key, a chain builder for its evidence, a clock, its store."""
    cfg = load_config(unit / CONFIG_NAME)
    signer = FileKeyStore(unit / "device.key")
    chain = ChainBuilder(unit / "segments", signer=signer,  # type: ignore[arg-type]
                         hq_key=load_hq_private(hq_dir / "keys" / "hq.key"), device_id=DEVICE)
    clock = SystemClock()
    return cfg, signer, chain, clock, Store(unit / "index.sqlite", clock)


def run_until(worker: SyncWorker, done: object, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        worker.run_once()
        if done():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"not done after {timeout_s} s: {worker.get_status()}")


def test_unit_uploads_an_incident_to_headquarters_and_is_acknowledged(
        setup: tuple[Path, Path, HqServer]) -> None:
    hq_dir, unit, _ = setup
    cfg, signer, chain, clock, store = provisioned(hq_dir, unit)
    paths = chain.incident(segments=3)
    seqs = [index_file(store, p, priority=1 if i == 3 else 0) for i, p in enumerate(paths)]
    settings = dataclasses.replace(SyncSettings.from_config(cfg.sync), chunk_bytes=64 * 1024)
    alarms: list[tuple[str, str]] = []
    worker = SyncWorker(store, unit, signer, DEVICE, cfg.hq.url, resolve_path(unit, cfg.hq.ca),
                        load_receipt_public(unit / "hq.pub"), clock, settings,
                        lambda: {"battery": {"pct": 71.5}, "recording": {"state": "READY"}},
                        on_alarm=lambda k, m: alarms.append((k, m)), rng=random.Random(5))
    try:
        run_until(worker, lambda: all(s.state == "acknowledged" for s in store.segments()))
        held = open_index(hq_dir)
        try:
            for seq in seqs:
                seg = store.segment(seq)
                assert seg is not None and seg.receipt is not None
                assert seg.receipt["seq"] == seq and seg.receipt["manifest_sha256"] == seg.manifest_sha256
                ev = held.evidence(DEVICE, seq)
                assert ev is not None and ev.manifest_sha256 == seg.manifest_sha256
                stored = hq_dir / "evidence" / DEVICE / segment_filename(seq)
                assert stored.read_bytes() == (unit / seg.path).read_bytes()
            assert store.segment(seqs[-1]).receipt["contiguous_through"] == seqs[-1]  # type: ignore[index,union-attr]
            beats = held.heartbeats(DEVICE)
            assert beats
            status = verify_heartbeat(beats[0][1], signer.public_key())
            assert status["battery"] == {"pct": "71.5"} and status["chain_head"]["seq"] == seqs[-1]
        finally:
            held.close()
        order = [a.detail["seq"] for a in store.audit_tail(100) if a.action == "upload-complete"]
        assert order[0] == seqs[3]  # the priority entry went first
        assert alarms == [] and worker.get_status()["last_error"] is None

        # Revoked: the next upload is refused, the unit alarms and stops, nothing is acknowledged.
        assert hq_main(["revoke", "--data-dir", str(hq_dir), "--device-id", DEVICE]) == 0
        late = index_file(store, chain.segment())
        worker.run_once()
        st = worker.get_status()
        assert st["state"] == "refused" and st["alarm"]["kind"] == "auth"
        assert alarms and alarms[0][0] == "auth"
        assert store.segment(late).state == "sealed"  # type: ignore[union-attr]
    finally:
        store.close()


def test_a_receipt_later_than_headquarters_waits_is_collected_with_head(tmp_path: Path) -> None:
    with serving(tmp_path, IngestSettings(wait_s=0.0)) as (hq_dir, unit, server):
        heads: list[Response] = []
        service_head = server.service.head

        def counting_head(device_id: str, upload_id: str) -> Response:
            heads.append(service_head(device_id, upload_id))
            return heads[-1]

        server.service.head = counting_head  # type: ignore[method-assign]
        cfg, signer, chain, clock, store = provisioned(hq_dir, unit)
        seqs = [index_file(store, chain.event("boot")), index_file(store, chain.segment())]
        alarms: list[tuple[str, str]] = []
        worker = SyncWorker(store, unit, signer, DEVICE, cfg.hq.url, resolve_path(unit, cfg.hq.ca),
                            load_receipt_public(unit / "hq.pub"), clock, SyncSettings.from_config(cfg.sync),
                            lambda: {}, on_alarm=lambda k, m: alarms.append((k, m)), rng=random.Random(7))
        try:
            run_until(worker, lambda: all(s.state == "acknowledged" for s in store.segments()))
            assert [store.segment(s).receipt["seq"] for s in seqs] == seqs  # type: ignore[index,union-attr]
            assert alarms == [] and worker.get_status()["last_error"] is None
            # Each completion was answered "pending": only then does the unit HEAD a finished upload.
            assert len([h for h in heads if "Bodycam-Receipt" in h.headers]) == len(seqs)
        finally:
            store.close()


def test_the_completing_patch_waits_for_its_receipt_without_holding_a_thread(tmp_path: Path) -> None:
    gated: list[GatedStore] = []

    def store(root: Path) -> GatedStore:
        gated.append(GatedStore(root))
        return gated[0]

    with serving(tmp_path, IngestSettings(wait_s=60.0), store) as (hq_dir, unit, server):
        cfg, signer, chain, clock, store_ = provisioned(hq_dir, unit)
        store_.close()
        data = chain.event("boot").read_bytes()
        client = HqClient(cfg.hq.url, resolve_path(unit, cfg.hq.ca), DEVICE, signer, clock)
        url = client.create(len(data), {"device_id": DEVICE, "seq": "0", "filename": "0000000000.bcs",
                                        "sha256": hashlib.sha256(data).hexdigest()})
        answers: list[AppendResult] = []
        sender = threading.Thread(target=lambda: answers.append(client.append(url, 0, data, last=True)))
        sender.start()
        try:
            assert gated[0].entered.acquire(timeout=30)  # ingest is running; the PATCH is waiting for it
            waiting = [f for f in sys._current_frames().values()
                       if any(frame.f_code.co_name == "_await_ingest" and "service" in frame.f_code.co_filename
                              for frame, _ in traceback.walk_stack(f))]
            assert waiting == []  # no thread of headquarters is held by the wait
        finally:
            gated[0].release.set()
            sender.join(30)
            client.close()
        assert answers and answers[0].receipt_b64 and not answers[0].ingest_pending  # the receipt, at once


def test_cut_connections_resume_at_headquarters_offset(setup: tuple[Path, Path, HqServer]) -> None:
    hq_dir, unit, server = setup
    cfg, signer, chain, clock, store = provisioned(hq_dir, unit)
    rng = random.Random(99)
    seqs = [index_file(store, chain.event("boot"))]
    seqs += [index_file(store, chain.segment(payload=rng.randbytes(600_000))) for _ in range(2)]
    proxy = CuttingProxy(server.port, rng, cuts=6, max_bytes=500_000)
    server.origins.add(proxy.url)  # the unit signs for the relay's origin: a configured one (finding 4)
    settings = dataclasses.replace(SyncSettings.from_config(cfg.sync), chunk_bytes=128 * 1024,
                                   backoff=Backoff(0.02, 0.2))
    worker = SyncWorker(store, unit, signer, DEVICE, proxy.url, resolve_path(unit, cfg.hq.ca),
                        load_receipt_public(unit / "hq.pub"), clock, settings, lambda: {}, rng=random.Random(6))
    try:
        run_until(worker, lambda: all(s.state == "acknowledged" for s in store.segments()), timeout_s=60.0)
        for seq in seqs:
            seg = store.segment(seq)
            assert seg is not None and seg.receipt is not None and seg.receipt["seq"] == seq
            stored = hq_dir / "evidence" / DEVICE / segment_filename(seq)
            assert stored.read_bytes() == (unit / seg.path).read_bytes()
        assert any(a.action == "upload-error" for a in store.audit_tail(200))  # the cuts did hit
    finally:
        proxy.close()
        store.close()


def test_a_segment_headquarters_refuses_is_quarantined_on_its_signed_notice(
        setup: tuple[Path, Path, HqServer]) -> None:
    hq_dir, unit, _ = setup
    cfg, signer, chain, clock, store = provisioned(hq_dir, unit)
    path = chain.segment()
    seq = index_file(store, path)
    bad = bytearray(path.read_bytes())
    bad[len(bad) // 2] ^= 0x40  # altered on the unit's disk after sealing: headquarters' verification fails
    path.write_bytes(bytes(bad))
    worker = SyncWorker(store, unit, signer, DEVICE, cfg.hq.url, resolve_path(unit, cfg.hq.ca),
                        load_receipt_public(unit / "hq.pub"), clock, SyncSettings.from_config(cfg.sync), lambda: {},
                        rng=random.Random(7))
    try:
        run_until(worker, lambda: store.segment(seq).state == "quarantined")  # type: ignore[union-attr]
        seg = store.segment(seq)
        assert seg is not None and seg.receipt is not None and seg.receipt["code"] == "verification-failed"
        assert path.exists()  # kept, never deleted
        assert worker.get_status()["alarm"]["kind"] == "quarantined"
    finally:
        store.close()
