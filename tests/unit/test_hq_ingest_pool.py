"""Ingest off the request path: the bounded pool, per-device serialisation with verification
outside the lock, the completing PATCH's deadline, a full queue, and ingest after a restart.

Concurrency is shown with events and barriers (a verification that would have to wait for the
other breaks the barrier), never with sleeps as assertions.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.evidence.receipt import decode_receipt_header, verify_receipt
from hq.app import build_service, open_index
from hq.audit import Auditor
from hq.db.migrate import MANAGED_USER_VERSION
from hq.errors import ApiError
from hq.index import SqliteIndex
from hq.ingest import Checked, Ingestor, LocalDeviceLocks, check_upload
from hq.ingest_pool import IngestJobs, IngestPool, IngestSettings
from hq.keygen import keygen
from hq.records import Upload
from hq.service import HqService, Response
from hq.storage import FileEvidenceStore, UploadArea
from tests.evidence_util import ChainBuilder
from tests.unit.hq_schema_v1 import make_v1_index
from tests.unit.test_hq_tus import T0_NS, FakeClock, create_headers, enroll, patch_headers, upload_id

WAIT_S = 10.0  # only a safety net against a hang: every wait below ends on an event


class GatedStore:
    """A FileEvidenceStore whose ``put`` announces itself and then waits for ``release``: a
    worker can be held inside the device lock for as long as a test needs."""

    def __init__(self, root: Path) -> None:
        self.inner = FileEvidenceStore(root)
        self.entered = threading.Semaphore(0)
        self.release = threading.Event()
        self.puts: list[tuple[str, int]] = []
        self._active: dict[str, int] = {}
        self.overlaps = 0
        self._guard = threading.Lock()

    def put(self, device_id: str, seq: int, source: Path) -> str:
        with self._guard:
            self._active[device_id] = self._active.get(device_id, 0) + 1
            self.overlaps += self._active[device_id] > 1
            self.puts.append((device_id, seq))
        self.entered.release()
        try:
            assert self.release.wait(WAIT_S), "the test never released the store"
            return self.inner.put(device_id, seq, source)
        finally:
            with self._guard:
                self._active[device_id] -= 1

    def get(self, device_id: str, seq: int) -> BinaryIO:
        return self.inner.get(device_id, seq)

    def exists(self, device_id: str, seq: int) -> bool:
        return self.inner.exists(device_id, seq)

    def quarantine(self, device_id: str, name: str, source: Path, reason: Mapping[str, Any]) -> str:
        return self.inner.quarantine(device_id, name, source, reason)


@dataclass
class Hq:
    root: Path
    index: SqliteIndex
    store: GatedStore
    key: ed25519.Ed25519PrivateKey
    clock: FakeClock
    services: list[HqService] = field(default_factory=list)

    def service(self, **ingest: Any) -> HqService:
        settings = IngestSettings(**{"workers": 2, "queue_max": 4, "wait_s": WAIT_S, **ingest})
        svc = HqService(self.index, self.store, UploadArea(self.root), self.key, self.clock, 10_000_000, settings)
        self.services.append(svc)
        return svc


@pytest.fixture
def hq(tmp_path: Path) -> Iterator[Hq]:
    root = tmp_path / "H"
    root.mkdir()
    index = SqliteIndex(root / "index.sqlite")
    h = Hq(root, index, GatedStore(root), ed25519.Ed25519PrivateKey.generate(), FakeClock())
    yield h
    h.store.release.set()
    for svc in h.services:
        svc.close()
    index.close()


def unit(tmp_path: Path, index: SqliteIndex, device_id: str) -> ChainBuilder:
    builder = ChainBuilder(tmp_path / device_id, device_id=device_id)
    enroll(index, builder.signer, device_id)
    return builder


def send_all_but_last(svc: HqService, device_id: str, path: Path, seq: int) -> tuple[str, bytes]:
    data = path.read_bytes()
    uid = upload_id(svc.create(device_id, create_headers(path, seq, device_id)))
    svc.patch(device_id, uid, patch_headers(0, data[:-1]), data[:-1])
    return uid, data


def finish(svc: HqService, device_id: str, uid: str, data: bytes) -> Response:
    return svc.patch(device_id, uid, patch_headers(len(data) - 1, data[-1:]), data[-1:])


def receipt_seq(r: Response, key: ed25519.Ed25519PrivateKey) -> int:
    return int(verify_receipt(decode_receipt_header(r.headers["Bodycam-Receipt"]), key.public_key())["seq"])


def in_thread(fn: Any, *args: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(fn(*args)), daemon=True)
    t.start()
    return t, out


def test_two_devices_verify_at_the_same_time(hq: Hq, tmp_path: Path) -> None:
    # Each verification waits at a barrier for the other: if ingest were serialised (the old
    # global lock), the first would wait alone, the barrier would break and nothing be stored.
    both = threading.Barrier(2, timeout=WAIT_S)

    def verify(path: Path, pub: ed25519.Ed25519PublicKey) -> Checked:
        both.wait()
        return check_upload(path, pub)

    hq.store.release.set()
    ingestor = Ingestor(hq.index, hq.store, UploadArea(hq.root), hq.key, Auditor(hq.index, "t", hq.clock),
                        hq.clock, verify=verify)
    jobs = IngestJobs(hq.index, ingestor, hq.clock, claim_lease_s=600)
    pool = IngestPool(jobs.run, workers=2, queue_max=2)
    svc = hq.service()
    futures = []
    for device_id in ("unit-a", "unit-b"):
        uid, data = send_all_but_last(svc, device_id, unit(tmp_path, hq.index, device_id).event("boot"), 0)
        UploadArea(hq.root).append(uid, len(data) - 1, data[-1:])
        assert hq.index.move_upload(uid, "receiving", "complete", T0_NS)
        upload = hq.index.upload(uid)
        assert upload is not None
        futures.append(pool.submit(upload))
    done = [f.result(WAIT_S) for f in futures]
    pool.close()
    assert [d.state if d else None for d in done] == ["stored", "stored"]
    assert not both.broken
    assert sorted(hq.store.puts) == [("unit-a", 0), ("unit-b", 0)]


def test_one_device_is_decided_one_upload_at_a_time_and_verified_outside_the_lock(hq: Hq, tmp_path: Path) -> None:
    svc = hq.service()
    builder = unit(tmp_path, hq.index, "unit-1")
    first = send_all_but_last(svc, "unit-1", builder.event("boot"), 0)
    second = send_all_but_last(svc, "unit-1", builder.event("shutdown"), 1)
    t1, out1 = in_thread(finish, svc, "unit-1", *first)
    assert hq.store.entered.acquire(timeout=WAIT_S)  # the first holds unit-1's lock, inside put
    t2, out2 = in_thread(finish, svc, "unit-1", *second)
    # The second is verified while the first holds the lock, then waits for it: two users.
    locks: LocalDeviceLocks = svc.device_locks
    assert wait_for(lambda: locks.users("unit-1") == 2)
    assert hq.store.puts == [("unit-1", 0)]
    hq.store.release.set()
    t1.join(WAIT_S)
    t2.join(WAIT_S)
    assert [receipt_seq(out1[0], hq.key), receipt_seq(out2[0], hq.key)] == [0, 1]
    assert hq.store.overlaps == 0 and locks.users("unit-1") == 0
    assert hq.index.device("unit-1").contiguous_through == 1  # type: ignore[union-attr]


def wait_for(condition: Any) -> bool:
    done = threading.Event()
    deadline = threading.Timer(WAIT_S, done.set)
    deadline.start()
    try:
        while not condition():
            if done.wait(0.01):
                return bool(condition())
        return True
    finally:
        deadline.cancel()


def test_past_the_deadline_the_patch_answers_pending_and_head_collects_the_receipt(hq: Hq, tmp_path: Path) -> None:
    svc = hq.service(wait_s=0.0)
    uid, data = send_all_but_last(svc, "unit-1", unit(tmp_path, hq.index, "unit-1").event("boot"), 0)
    r = finish(svc, "unit-1", uid, data)
    assert (r.status, r.headers["Upload-Offset"], r.headers["Bodycam-Ingest"]) == (204, str(len(data)), "pending")
    assert "Bodycam-Receipt" not in r.headers
    head = svc.head("unit-1", uid)
    assert head.headers["Bodycam-Ingest"] == "pending" and head.headers["Upload-Offset"] == str(len(data))
    with pytest.raises(ApiError) as more:  # nothing more can be appended to a complete upload
        svc.patch("unit-1", uid, patch_headers(len(data), b"x"), b"x")
    assert more.value.status == 409
    hq.store.release.set()
    future = svc.pool.pending(uid)
    assert future is not None and future.result(WAIT_S) is not None
    head = svc.head("unit-1", uid)
    assert "Bodycam-Ingest" not in head.headers and receipt_seq(head, hq.key) == 0
    assert receipt_seq(svc.patch("unit-1", uid, patch_headers(len(data), b""), b""), hq.key) == 0


def test_a_full_queue_answers_503_and_the_upload_is_ingested_later(hq: Hq, tmp_path: Path) -> None:
    svc = hq.service(workers=1, queue_max=1, wait_s=0.0)
    builder = unit(tmp_path, hq.index, "unit-1")
    sent = [send_all_but_last(svc, "unit-1", builder.event("boot"), i) for i in range(3)]
    assert finish(svc, "unit-1", *sent[0]).headers["Bodycam-Ingest"] == "pending"
    assert hq.store.entered.acquire(timeout=WAIT_S)  # the one worker is busy with seq 0
    assert finish(svc, "unit-1", *sent[1]).headers["Bodycam-Ingest"] == "pending"  # queued
    with pytest.raises(ApiError) as refused:
        finish(svc, "unit-1", *sent[2])
    err = refused.value
    assert (err.status, err.code, err.headers["Retry-After"]) == (503, "ingest-busy", "30")
    uid2, data2 = sent[2]
    assert hq.index.upload(uid2).state == "complete"  # type: ignore[union-attr]
    assert svc.head("unit-1", uid2).headers["Upload-Offset"] == str(len(data2))  # nothing to send again
    hq.store.release.set()
    assert wait_for(lambda: svc.pool.depth() == 0 and svc.pool.pending(sent[1][0]) is None)
    assert svc.resume_ingest() == 1
    queued = svc.pool.pending(uid2)
    assert queued is not None and queued.result(WAIT_S) is not None
    again = svc.patch("unit-1", uid2, patch_headers(len(data2), b""), b"")
    assert receipt_seq(again, hq.key) == 2


def test_completed_uploads_are_ingested_after_a_restart(hq: Hq, tmp_path: Path) -> None:
    hq.store.release.set()
    svc = hq.service()
    builder = unit(tmp_path, hq.index, "unit-1")
    uids = []
    for seq, state in enumerate(("complete", "ingesting")):
        uid, data = send_all_but_last(svc, "unit-1", builder.event("boot"), seq)
        UploadArea(hq.root).append(uid, len(data) - 1, data[-1:])
        hq.index.move_upload(uid, "receiving", "complete", T0_NS)
        if state == "ingesting":  # claimed by a worker of the stopped process
            hq.index.move_upload(uid, "complete", "ingesting", T0_NS)
        uids.append(uid)
    # Another node may still be ingesting the claimed one: only the unclaimed one is taken...
    hq.clock.ns += 1_000_000_000
    assert svc.resume_ingest() == 1
    assert wait_for(lambda: hq.index.upload(uids[0]).state == "stored")  # type: ignore[union-attr]
    assert hq.index.upload(uids[1]).state == "ingesting"  # type: ignore[union-attr]
    # ...but the one process over an embedded data dir knows every claim is its own, left stale.
    restarted = hq.service()
    assert restarted.resume_ingest(sole_node=True) == 1
    assert wait_for(lambda: hq.index.upload(uids[1]).state == "stored")  # type: ignore[union-attr]
    assert receipt_seq(restarted.head("unit-1", uids[1]), hq.key) == 1


def test_a_claim_older_than_the_lease_is_taken_over(hq: Hq, tmp_path: Path) -> None:
    hq.store.release.set()
    svc = hq.service(claim_lease_s=60.0)
    uid, data = send_all_but_last(svc, "unit-1", unit(tmp_path, hq.index, "unit-1").event("boot"), 0)
    UploadArea(hq.root).append(uid, len(data) - 1, data[-1:])
    hq.index.move_upload(uid, "receiving", "complete", T0_NS)
    hq.index.move_upload(uid, "complete", "ingesting", T0_NS)
    hq.clock.ns = T0_NS + 59_000_000_000
    assert svc.resume_ingest() == 0
    hq.clock.ns = T0_NS + 61_000_000_000
    assert svc.resume_ingest() == 1
    assert wait_for(lambda: hq.index.upload(uid).state == "stored")  # type: ignore[union-attr]


def test_a_node_that_stored_but_did_not_record_answers_with_a_receipt(hq: Hq, tmp_path: Path) -> None:
    hq.store.release.set()
    svc = hq.service(wait_s=WAIT_S)
    uid, data = send_all_but_last(svc, "unit-1", unit(tmp_path, hq.index, "unit-1").event("boot"), 0)
    assert receipt_seq(finish(svc, "unit-1", uid, data), hq.key) == 0
    # Replay the crash window: the entry is stored and its staged bytes gone, the upload claimed.
    with sqlite3.connect(hq.root / "index.sqlite") as raw:
        raw.execute("UPDATE uploads SET state = 'ingesting', result = NULL WHERE upload_id = ?", (uid,))
    assert svc.resume_ingest(sole_node=True) == 1
    assert wait_for(lambda: hq.index.upload(uid).state == "stored")  # type: ignore[union-attr]
    assert receipt_seq(svc.head("unit-1", uid), hq.key) == 0


def test_staged_bytes_lost_and_not_held_send_the_unit_back_to_offset_zero(hq: Hq, tmp_path: Path) -> None:
    svc = hq.service()
    uid, data = send_all_but_last(svc, "unit-1", unit(tmp_path, hq.index, "unit-1").event("boot"), 0)
    hq.index.move_upload(uid, "receiving", "complete", T0_NS)
    UploadArea(hq.root).path(uid).unlink()
    assert svc.resume_ingest() == 1
    assert wait_for(lambda: hq.index.upload(uid).state == "receiving")  # type: ignore[union-attr]
    assert svc.head("unit-1", uid).headers["Upload-Offset"] == "0"
    assert hq.store.puts == []


def test_a_version_1_index_is_migrated_with_its_uploads(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite"
    raw = make_v1_index(path)  # the first release's schema: uploads know only four states
    raw.execute("INSERT INTO devices (device_id, public_pem, fingerprint, enrolled_utc_ns) VALUES ('u', 'p', 'f', 0)")
    raw.execute("INSERT INTO uploads VALUES ('ab', 'u', 3, 'f.bcs', 'cd', 10, 'receiving', 1, 1, NULL)")
    raw.close()
    with SqliteIndex(path) as index:
        assert index.move_upload("ab", "receiving", "complete", 5)
        upload = index.upload("ab")
        assert upload is not None and (upload.state, upload.seq, upload.updated_utc_ns) == ("complete", 3, 5)
        assert not index.move_upload("ab", "receiving", "complete", 6)
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == MANAGED_USER_VERSION
        assert raw.execute("SELECT name FROM sqlite_master WHERE name = 'uploads_entry'").fetchone()


def test_the_pool_queues_one_upload_once_and_refuses_past_its_bound() -> None:
    gate = threading.Event()
    started = threading.Event()

    def job(upload: Upload) -> Upload | None:
        started.set()
        gate.wait(WAIT_S)
        return replace(upload, state="stored")

    pool = IngestPool(job, workers=1, queue_max=1)
    a, b, c = (Upload(f"{i:032x}", "u", i, "f", "0" * 64, 1, "complete", 0, 0) for i in range(3))
    fa = pool.submit(a)
    assert started.wait(WAIT_S)
    fb = pool.submit(b)
    assert pool.submit(b) is fb and pool.depth() == 1
    with pytest.raises(Exception, match="waiting for ingest"):
        pool.submit(c)
    gate.set()
    assert fa.result(WAIT_S).state == fb.result(WAIT_S).state == "stored"  # type: ignore[union-attr]
    pool.close()
    with pytest.raises(Exception, match="stopping"):
        pool.submit(c)


def test_a_restarted_service_ingests_what_was_complete_and_claimed(tmp_path: Path) -> None:
    # A service stopped with one upload complete and another claimed by one of its workers:
    # the next `serve` over the data dir (build_service) ingests both without the unit.
    data, keys = tmp_path / "H", tmp_path / "H" / "keys"
    keygen(keys)
    builder = ChainBuilder(tmp_path / "unit", device_id="unit-1")
    index = open_index(data)
    try:
        enroll(index, builder.signer, "unit-1")
        first = build_service(data, keys, index, ingest=IngestSettings(workers=1, wait_s=0.0))
        first.close()  # its pool takes nothing more: completions stay in the index
        uids = []
        for seq in range(2):
            uid, data_bytes = send_all_but_last(first, "unit-1", builder.event("boot"), seq)
            with pytest.raises(ApiError) as busy:  # a stopping service queues nothing: 503
                finish(first, "unit-1", uid, data_bytes)
            assert busy.value.status == 503
            uids.append(uid)
        assert index.move_upload(uids[1], "complete", "ingesting", T0_NS)
        restarted = build_service(data, keys, index, ingest=IngestSettings(workers=1, wait_s=0.0))
        try:
            assert wait_for(lambda: all(index.upload(u).state == "stored" for u in uids))  # type: ignore[union-attr]
            assert [index.evidence("unit-1", s) is not None for s in (0, 1)] == [True, True]
        finally:
            restarted.close()
    finally:
        index.close()
