"""End to end on a real S3 server (SeaweedFS): the headquarters service (driven without HTTP) takes a
sealed segment through two nodes sharing one index and one object store, stores it under Object
Lock, signs a receipt, and the evidence reads back (and exports) byte-identical."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.evidence.receipt import decode_receipt_header, verify_receipt
from hq.app import build_service
from hq.export import export
from hq.index import SqlIndex, SqliteIndex
from hq.s3store import parse_location
from hq.service import HqService
from hq.storage import StorageError
from hq.storeurl import open_evidence_store, open_stores
from tests.evidence_util import ChainBuilder
from tests.s3_util import S3Server, fresh_bucket
from tests.unit.test_hq_tus import create_headers, enroll, patch_headers, upload_id


def make_node(s3: S3Server, url: str, root: Path, index: SqlIndex, key: ed25519.Ed25519PrivateKey) -> HqService:
    store, uploads = open_stores(root, url, time.time_ns, s3.session())
    return HqService(index, store, uploads, key, time.time_ns)


def test_a_segment_resumed_through_another_node_is_stored_locked_and_receipted(
    s3_server: S3Server, tmp_path: Path
) -> None:
    bucket = fresh_bucket()
    url = s3_server.store_url(bucket, retention_days=1)
    index = SqliteIndex(tmp_path / "index.sqlite")
    unit = ChainBuilder(tmp_path / "unit", device_id="unit-1")
    enroll(index, unit.signer, "unit-1")
    key = ed25519.Ed25519PrivateKey.generate()
    first, second = (make_node(s3_server, url, tmp_path / name, index, key) for name in ("n1", "n2"))
    assert first.readiness() == {"index": "ok", "store": "ok"}
    path = unit.segment()
    data = path.read_bytes()
    uid = upload_id(first.create("unit-1", create_headers(path, 0)))
    half = len(data) // 2
    assert first.patch("unit-1", uid, patch_headers(0, data[:half]), data[:half]).headers["Upload-Offset"] == str(half)
    # The unit's connection to the first node is cut: it asks the second where the upload stands.
    assert second.head("unit-1", uid).headers["Upload-Offset"] == str(half)
    answer = second.patch("unit-1", uid, patch_headers(half, data[half:]), data[half:])
    assert answer.status == 204
    receipt = verify_receipt(decode_receipt_header(answer.headers["Bodycam-Receipt"]), key.public_key())
    assert receipt["file_sha256"] == hashlib.sha256(data).hexdigest()
    # The index names the locked version; it reads back byte-identical.
    held = index.evidence("unit-1", 0)
    assert held is not None
    where_bucket, where_key, version = parse_location(held.location)
    assert (where_bucket, where_key) == (bucket, "evidence/unit-1/" + path.name) and version
    head = s3_server.client().head_object(Bucket=bucket, Key=where_key, VersionId=version)
    assert head["ObjectLockMode"] == "COMPLIANCE"
    with open_evidence_store(tmp_path / "reader", url, session=s3_server.session()).get(
        "unit-1", 0, held.location
    ) as src:
        assert src.read() == data
    # Nothing of the upload is left: no staging parts, no spooled copy.
    staged = s3_server.client().list_objects_v2(Bucket=f"{bucket}-staging", Prefix="staging/")
    assert staged.get("KeyCount") == 0
    assert [list((tmp_path / n / "spool").iterdir()) for n in ("n1", "n2")] == [[], []]
    # An export for court reads the recorded version.
    out = tmp_path / "export"
    store = open_evidence_store(tmp_path / "reader", url, session=s3_server.session())
    result = export(index, store, "unit-1", out)
    assert result.entries == 1 and (out / path.name).read_bytes() == data
    first.close()
    second.close()
    index.close()
    # The same through the command, credentials from the environment (boto3's standard chain).
    court = tmp_path / "court"
    done = subprocess.run(
        [sys.executable, "-m", "hq.cli", "export", "--data-dir", str(tmp_path), "--device-id", "unit-1",
         "--out", str(court), "--store-url", url],
        env={**os.environ, **s3_server.env()}, capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (court / path.name).read_bytes() == data
    assert s3_server.secret_key not in done.stdout + done.stderr


def test_two_nodes_over_postgresql_and_s3_resume_one_upload(
    s3_server: S3Server, fresh_postgres_url: str, tmp_path: Path
) -> None:
    """The fleet configuration: each node its own index connection (PostgreSQL) and data dir, one
    object store; the upload begun on one node completes on the other."""
    url = s3_server.store_url(fresh_bucket(), retention_days=1)
    indexes = [SqlIndex.open(fresh_postgres_url, auto_migrate=True) for _ in range(2)]
    unit = ChainBuilder(tmp_path / "unit", device_id="unit-1")
    enroll(indexes[0], unit.signer, "unit-1")
    key = ed25519.Ed25519PrivateKey.generate()
    nodes = [make_node(s3_server, url, tmp_path / f"n{i}", index, key) for i, index in enumerate(indexes)]
    path = unit.segment()
    data = path.read_bytes()
    uid = upload_id(nodes[0].create("unit-1", create_headers(path, 0)))
    third = len(data) // 3
    nodes[0].patch("unit-1", uid, patch_headers(0, data[:third]), data[:third])
    assert nodes[1].head("unit-1", uid).headers["Upload-Offset"] == str(third)
    answer = nodes[1].patch("unit-1", uid, patch_headers(third, data[third:]), data[third:])
    assert answer.status == 204 and "Bodycam-Receipt" in answer.headers
    held = indexes[0].evidence("unit-1", 0)  # recorded by node 1, seen by node 0
    assert held is not None and held.file_sha256 == hashlib.sha256(data).hexdigest()
    with open_evidence_store(tmp_path / "reader", url, session=s3_server.session()).get(
        "unit-1", 0, held.location
    ) as src:
        assert src.read() == data
    for node, index in zip(nodes, indexes, strict=True):
        node.close()
        index.close()


def test_a_quarantined_upload_is_locked_in_the_quarantine_prefix(s3_server: S3Server, tmp_path: Path) -> None:
    bucket = fresh_bucket()
    url = s3_server.store_url(bucket, retention_days=1)
    index = SqliteIndex(tmp_path / "index.sqlite")
    mine, theirs = ChainBuilder(tmp_path / "u1", device_id="unit-1"), ChainBuilder(tmp_path / "u2", device_id="u-2")
    enroll(index, mine.signer, "unit-1")
    key = ed25519.Ed25519PrivateKey.generate()
    node = make_node(s3_server, url, tmp_path / "n1", index, key)
    path = theirs.event("boot")  # signed by a key headquarters does not hold for unit-1
    data = path.read_bytes()
    uid = upload_id(node.create("unit-1", create_headers(path, 0)))
    answer = node.patch("unit-1", uid, patch_headers(0, data), data)
    assert answer.status == 422 and "Bodycam-Receipt" not in answer.headers
    [q] = index.quarantined("unit-1")
    where_bucket, where_key, version = parse_location(q.location)
    assert (where_bucket, where_key) == (bucket, f"quarantine/unit-1/{uid}.bcs")
    client = s3_server.client()
    assert client.get_object(Bucket=bucket, Key=where_key, VersionId=version)["Body"].read() == data
    assert client.head_object(Bucket=bucket, Key=where_key, VersionId=version)["ObjectLockMode"] == "COMPLIANCE"
    assert index.evidence("unit-1", 0) is None
    node.close()
    index.close()


def test_readiness_names_an_unreachable_bucket(s3_server: S3Server, tmp_path: Path) -> None:
    bucket = fresh_bucket()
    index = SqliteIndex(tmp_path / "index.sqlite")
    node = make_node(s3_server, s3_server.store_url(bucket), tmp_path, index, ed25519.Ed25519PrivateKey.generate())
    s3_server.client().delete_bucket(Bucket=f"{bucket}-staging")  # the operator removed it under us
    assert node.readiness()["store"].startswith(f"StorageError: reaching staging bucket {bucket}-staging: 404")
    node.close()
    index.close()


def test_a_service_refuses_to_start_on_a_bucket_without_object_lock(s3_server: S3Server, tmp_path: Path) -> None:
    bucket = fresh_bucket("plain")
    s3_server.client().create_bucket(Bucket=bucket)
    with pytest.raises(StorageError, match="has no Object Lock"):
        open_stores(tmp_path, s3_server.store_url(bucket), session=s3_server.session())


def test_build_service_reads_credentials_from_the_standard_chain(
    s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hq.keygen import keygen

    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    keys = tmp_path / "keys"
    keygen(keys)
    index = SqliteIndex(tmp_path / "index.sqlite")
    service = build_service(tmp_path, keys, index, store_url=s3_server.store_url(fresh_bucket(), retention_days=1))
    assert type(service.uploads).__name__ == "S3UploadStore"
    service.close()
    index.close()
