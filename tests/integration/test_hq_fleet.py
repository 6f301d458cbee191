"""Two headquarters nodes over one PostgreSQL and one S3 store with Object Lock, behind a real
HAProxy terminating TLS, all on loopback and started here: what a fleet deployment promises.

- A unit whose connection is cut mid-upload (its node killed) resumes through the other node,
  and the evidence stored under lock is byte-identical to what it sent.
- A node killed mid-ingest loses nothing: the other node takes the upload over once the claim's
  lease has passed, and a receipt exists only for an object the store holds under lock.
- 1,000 simulated units heartbeat while 20 units upload: every heartbeat answered, every upload
  receipted, every receipt backed by a locked object. Bounded: 2 heartbeats per unit, a deadline.

HAProxy balances ``first``: every request goes to node 1 while it is up, so the test knows which
node to kill; its health check (``GET /healthz`` every 200 ms) moves traffic to node 2.
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hq.app import open_index
from tests.evidence_util import ChainBuilder
from tests.fleet_util import (
    Device,
    Fleet,
    create,
    heartbeat_storm,
    patch,
    receipt_via_head,
    resume,
    running_fleet,
    sign,
    sim_units,
    upload,
)
from tests.s3_util import S3Server

LEASE_S = 4.0  # a claim older than this is taken over by another node
MAINTAIN_S = 1.0


@pytest.fixture
def fleet(tmp_path: Path, s3_server: S3Server, fresh_postgres_url: str) -> Iterator[Fleet]:
    bucket = "fleet-" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:12]
    node_args = ["--ingest-lease-s", str(LEASE_S), "--maintain-interval-s", str(MAINTAIN_S),
                 # every simulated unit comes from 127.0.0.1, as units behind one carrier NAT do
                 "--max-connections-per-source", "1024"]
    with running_fleet(tmp_path, fresh_postgres_url, s3_server.store_url(bucket, retention_days=1), s3_server.env(),
                       s3_server.client(), node_args=node_args) as fleet:
        yield fleet


def enrolled(fleet: Fleet, name: str, device_id: str) -> tuple[ChainBuilder, Device]:
    builder = ChainBuilder(fleet.admin.parent / name, device_id=device_id)
    fleet.enrol([(device_id, builder.signer.public_key())])
    return builder, Device(device_id, builder.signer)


def stored_location(fleet: Fleet, device_id: str, seq: int) -> str:
    with open_index(fleet.admin, fleet.database_url) as index:
        evidence = index.evidence(device_id, seq)
    assert evidence is not None, f"{device_id}/{seq} is not in the index"
    return evidence.location


def test_a_unit_cut_mid_upload_resumes_through_the_other_node(fleet: Fleet) -> None:
    builder, unit = enrolled(fleet, "u-cut", "fleet-cut")
    segment = builder.segment(payload=os.urandom(600_000))
    evidence = segment.read_bytes()
    chunk = 128 * 1024
    conn = fleet.connection()
    location = create(fleet, conn, unit, segment, 0)
    for offset in (0, chunk):
        assert patch(fleet, conn, unit, location, offset, evidence[offset:offset + chunk]).status == 204
    fleet.nodes[0].kill()  # node 1 held the connection; its staged chunks are in S3, its state in PostgreSQL
    conn.close()
    resume(fleet, unit, location, evidence, chunk)
    receipt_via_head(fleet, unit, location)
    assert fleet.locked_object(stored_location(fleet, unit.device_id, 0)) == evidence


def test_a_node_killed_mid_ingest_loses_nothing_and_receipts_only_what_is_stored(fleet: Fleet,
                                                                                  record_property: Any) -> None:
    builder, unit = enrolled(fleet, "u-ingest", "fleet-ingest")
    segment = builder.segment(payload=os.urandom(12_000_000))  # big enough that verifying it takes a while
    evidence = segment.read_bytes()
    conn = fleet.connection()
    location = create(fleet, conn, unit, segment, 0)
    upload_id = location.rstrip("/").rsplit("/", 1)[-1]
    last, step = len(evidence) - 1024, 4 * 1024 * 1024
    for offset in range(0, last, step):
        assert patch(fleet, conn, unit, location, offset, evidence[offset:min(last, offset + step)]).status == 204
    # The completing PATCH: sent whole; node 1 is killed as soon as the index shows the upload
    # complete or claimed for ingest (or, if it was quicker than that, stored).
    body = evidence[last:]
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    headers = sign(unit, "PATCH", fleet.origin + location,
                   {"Content-Type": "application/offset+octet-stream", "Upload-Offset": str(last),
                    "Upload-Checksum": f"sha256 {digest}"}, body)
    conn.request("PATCH", location, body=body, headers=headers)
    state = "receiving"
    with open_index(fleet.admin, fleet.database_url) as index:
        deadline = time.monotonic() + 30
        while state == "receiving" and time.monotonic() < deadline:
            found = index.upload(upload_id)
            state = found.state if found else "missing"
            time.sleep(0.005)
    fleet.nodes[0].kill()
    conn.close()
    record_property("state_when_killed", state)
    with open_index(fleet.admin, fleet.database_url) as index:
        if index.evidence(unit.device_id, 0) is None:
            # What node 1 did not store, it did not receipt.
            found = index.upload(upload_id)
            assert found is not None and "receipt" not in (found.result or {})
    resume(fleet, unit, location, evidence, 512 * 1024)
    receipt_via_head(fleet, unit, location)
    assert fleet.locked_object(stored_location(fleet, unit.device_id, 0)) == evidence
    with open_index(fleet.admin, fleet.database_url) as index:
        held = index.evidence_list(unit.device_id)
    assert [e.seq for e in held] == [0]


def test_a_thousand_units_heartbeat_while_twenty_upload(fleet: Fleet, record_property: Any) -> None:
    units = sim_units(1000)
    fleet.enrol((u.device_id, u.keystore.public_key()) for u in units)
    uploaders = [enrolled(fleet, f"up-{i}", f"fleet-up-{i:02d}") for i in range(20)]
    segments = {unit.device_id: builder.segment(payload=os.urandom(400_000)) for builder, unit in uploaders}

    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        uploads = {unit.device_id: pool.submit(upload, fleet, unit, segments[unit.device_id], 0, 64 * 1024)
                   for _, unit in uploaders}
        storm = heartbeat_storm(units, fleet.origin, fleet.keys / "ca.pem", rounds=2, interval_s=6.0, threads=24)
        receipts = {device_id: f.result(timeout=300)[1] for device_id, f in uploads.items()}

    record_property("heartbeats", storm.summary())
    assert not storm.failed, storm.failed[:3]
    assert len(storm.ok) == 2 * len(units)
    assert all(receipts.values()) and len(receipts) == 20
    for device_id, segment in segments.items():
        assert fleet.locked_object(stored_location(fleet, device_id, 0)) == segment.read_bytes()
    with open_index(fleet.admin, fleet.database_url) as index:
        beating = [d for d in index.devices() if d.device_id.startswith("sim-")]
    assert len(beating) == 1000 and all(d.last_heartbeat_utc_ns for d in beating)
