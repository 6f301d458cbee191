"""Per-unit quotas (review finding 8): open uploads, bytes in flight, the segment bound, the
heartbeat rate and expiry of abandoned uploads, on the service without HTTP and a fake clock."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.evidence.receipt import make_heartbeat
from hq.errors import ApiError
from hq.index import SqliteIndex
from hq.quotas import GIB, HeartbeatLimiter, OpenUploads, Quotas, admit_upload
from hq.service import HqService
from hq.storage import FileEvidenceStore, UploadArea
from hq.tus import UploadMeta, encode_metadata
from tests.evidence_util import ChainBuilder
from tests.unit.test_hq_tus import FakeClock, enroll, patch_headers, upload_id

NS_PER_S = 1_000_000_000


@dataclass
class Hq:
    root: Path
    index: SqliteIndex
    service: HqService
    clock: FakeClock
    unit: ChainBuilder


@pytest.fixture
def hq(tmp_path: Path) -> Iterator[Hq]:
    root = tmp_path / "H"
    root.mkdir()
    index = SqliteIndex(root / "index.sqlite")
    clock = FakeClock()
    unit = ChainBuilder(tmp_path / "unit", device_id="unit-1")
    enroll(index, unit.signer, "unit-1")
    service = HqService(index, FileEvidenceStore(root), UploadArea(root), ed25519.Ed25519PrivateKey.generate(),
                        clock)
    yield Hq(root, index, service, clock, unit)
    service.close()
    index.close()


def create(service: HqService, seq: int, length: int) -> str:
    meta = UploadMeta("unit-1", seq, f"{seq:010d}.bcs", hashlib.sha256(str(seq).encode()).hexdigest())
    headers = {"Tus-Resumable": "1.0.0", "Upload-Length": str(length), "Upload-Metadata": encode_metadata(meta)}
    return upload_id(service.create("unit-1", headers))


def refusal(call: object) -> ApiError:
    assert callable(call)
    with pytest.raises(ApiError) as info:
        call()
    return info.value


def test_200_uploads_of_4_gib_get_the_quota_and_the_rest_a_clear_refusal(hq: Hq) -> None:
    accepted, refused = [], []
    for seq in range(200):
        try:
            accepted.append(create(hq.service, seq, 4 * GIB))
        except ApiError as err:
            refused.append(err)
    # 8 GiB in flight per unit: two 4 GiB uploads; every other one refused, none stored.
    assert len(accepted) == 2 and len(refused) == 198
    assert {(e.status, e.code, e.headers["Retry-After"]) for e in refused} == {(429, "too-many-bytes", "60")}
    assert "8589934592 bytes already in flight" in refused[0].message and "\n" not in refused[0].message
    assert len(hq.index.uploads("receiving")) == 2
    assert sorted(p.name for p in (hq.root / "uploads").iterdir()) == sorted(f"{u}.part" for u in accepted)


def test_open_uploads_are_counted_and_a_finished_one_makes_room(hq: Hq) -> None:
    uids = [create(hq.service, seq, 1000) for seq in range(8)]
    err = refusal(lambda: create(hq.service, 8, 1000))
    assert (err.status, err.code) == (429, "too-many-uploads") and "at most 8" in err.message
    hq.service.terminate("unit-1", uids[0])
    create(hq.service, 8, 1000)
    # The same upload asked for again is not a new one: idempotent creation is never refused.
    assert create(hq.service, 3, 1000) == uids[3]


def test_the_segment_bound_is_tus_max_size(hq: Hq) -> None:
    err = refusal(lambda: create(hq.service, 0, 4 * GIB + 1))
    assert (err.status, err.code) == (413, "too-large")
    assert hq.service.answer(hq.service.route("OPTIONS", "/v1/uploads/"), None, {}, b"").headers[
        "Tus-Max-Size"] == str(4 * GIB)


def test_admission_is_pure_over_what_the_unit_holds() -> None:
    q = Quotas(open_uploads=2, bytes_in_flight=100)
    admit_upload(q, OpenUploads(1, 50), 50)
    assert refusal(lambda: admit_upload(q, OpenUploads(2, 0), 1)).code == "too-many-uploads"
    assert refusal(lambda: admit_upload(q, OpenUploads(1, 51), 50)).code == "too-many-bytes"


def test_heartbeats_over_the_rate_are_refused_and_not_stored(hq: Hq) -> None:
    body = make_heartbeat({"battery": {"pct": 50}}, hq.unit.signer)
    answers = []
    for _ in range(10):
        try:
            answers.append(hq.service.heartbeat("unit-1", body).status)
        except ApiError as err:
            answers.append(err.status)
            assert err.headers["Retry-After"] == "5" and err.code == "too-many-heartbeats"
    assert answers == [200] * 3 + [429] * 7  # the burst, then one per 5 s
    assert len(hq.index.heartbeats("unit-1")) == 3
    # This node's bucket has a token again after 5 s, but the index holds 3 in the last 15 s,
    # stored through any node: refused until that window is clear.
    hq.clock.ns += 5 * NS_PER_S
    assert refusal(lambda: hq.service.heartbeat("unit-1", body)).headers["Retry-After"] == "15"
    hq.clock.ns += 15 * NS_PER_S  # quiet for a whole window: the burst is there again
    assert [hq.service.heartbeat("unit-1", body).status for _ in range(3)] == [200] * 3
    assert refusal(lambda: hq.service.heartbeat("unit-1", body)).status == 429
    assert len(hq.index.heartbeats("unit-1")) == 6


def test_the_heartbeat_limiter_refills_and_says_how_long_to_wait() -> None:
    limiter = HeartbeatLimiter(Quotas(heartbeat_interval_s=10.0, heartbeat_burst=1))
    assert limiter.wait_s("a", 0) == 0
    assert limiter.wait_s("a", 4 * NS_PER_S) == 6
    assert limiter.wait_s("b", 4 * NS_PER_S) == 0  # another unit has its own bucket
    assert limiter.wait_s("a", 10 * NS_PER_S) == 0


def test_heartbeats_stored_through_other_nodes_count_where_the_index_counts_them() -> None:
    stored: list[int] = []  # what every node stored, as the shared index holds it

    def count_since(device_id: str, since_ns: int) -> int:
        return sum(1 for t in stored if t >= since_ns)

    nodes = [HeartbeatLimiter(Quotas(), count_since) for _ in range(3)]
    answers = []
    for i in range(9):  # one unit, one heartbeat a second, round robin over three nodes
        now = i * NS_PER_S
        wait = nodes[i % 3].wait_s("a", now)
        answers.append(wait)
        if wait == 0:
            stored.append(now)
    assert answers.count(0) == 3 and stored == [0, 1 * NS_PER_S, 2 * NS_PER_S]  # the burst, fleet-wide
    assert all(w == 15 for w in answers if w)


def test_an_abandoned_upload_expires_its_bytes_go_and_it_is_audited(hq: Hq) -> None:
    idle, busy = create(hq.service, 0, 1000), create(hq.service, 1, 1000)
    expires = parsedate_to_datetime(hq.service.head("unit-1", idle).headers["Upload-Expires"])
    assert expires.timestamp() == hq.clock.ns // NS_PER_S + 24 * 3600  # tus expiration, said up front
    hq.clock.ns += 23 * 3600 * NS_PER_S
    answer = hq.service.patch("unit-1", busy, patch_headers(0, b"x" * 10), b"x" * 10)  # busy sends a chunk
    later = parsedate_to_datetime(answer.headers["Upload-Expires"])
    assert later.timestamp() == hq.clock.ns // NS_PER_S + 24 * 3600  # pushed back by the chunk
    hq.clock.ns += 3600 * NS_PER_S + 1
    hq.service.maintain()
    assert hq.index.upload(idle).state == "expired"  # type: ignore[union-attr]
    assert hq.index.upload(busy).state == "receiving"  # type: ignore[union-attr]
    assert not UploadArea(hq.root).path(idle).exists() and UploadArea(hq.root).path(busy).exists()
    assert refusal(lambda: hq.service.head("unit-1", idle)).status == 404
    [record] = hq.index.audit_log("upload-expire")
    assert (record.target, record.detail["upload_id"], record.detail["idle_s"]) == ("unit-1/0", idle, 24 * 3600)
    # Expired, it no longer counts against the quota; the unit can create the upload again.
    assert create(hq.service, 0, 1000) != idle


def test_the_periodic_pass_applies_heartbeat_retention(hq: Hq) -> None:
    # The retention triggers judge age by the database's own clock: real time here.
    now = time.time_ns()
    hq.clock.ns = now
    status = {"recording": {"state": "ready"}}
    body = make_heartbeat(status, hq.unit.signer)
    hq.index.add_heartbeat("unit-1", now - 31 * 24 * 3600 * NS_PER_S, body, status)  # past the 30-day policy
    hq.index.add_heartbeat("unit-1", now, body, status)
    hq.service.maintain()
    assert [when for when, _ in hq.index.heartbeats("unit-1")] == [now]
