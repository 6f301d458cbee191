"""The S3 evidence store against a real S3 server with Object Lock (SeaweedFS, tests/s3_util.py):
stored evidence cannot be deleted, overwritten or have its retention shortened, and the server
refuses bytes whose SHA-256 differs. The last tests pin SeaweedFS's known gaps, listed in
docs/deployment-hq.md ("Object store"), so that list stays true."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from agent.evidence.format import segment_filename
from hq.s3store import S3EvidenceStore, connect, parse_location
from hq.storage import StorageError
from hq.storeurl import parse_store_url
from tests.evidence_util import ChainBuilder
from tests.s3_util import S3Server, fresh_bucket


def make_store(s3: S3Server, bucket: str | None = None, **params: str | int) -> S3EvidenceStore:
    config = parse_store_url(s3.store_url(bucket or fresh_bucket(), retention_days=1, **params))
    store = S3EvidenceStore(connect(config, s3.session()), config, time.time_ns)
    store.prepare()
    return store


def sealed(tmp_path: Path, name: str = "u1") -> Path:
    return ChainBuilder(tmp_path / name, device_id="unit-1").segment()


def refused(call: Any, **kwargs: Any) -> str:
    with pytest.raises(ClientError) as caught:
        call(**kwargs)
    return str(caught.value.response["Error"]["Code"])


def test_put_returns_the_locked_version_and_reads_it_back(s3_server: S3Server, tmp_path: Path) -> None:
    store = make_store(s3_server)
    path = sealed(tmp_path)
    original = path.read_bytes()
    where = store.put("unit-1", 0, path)
    bucket, key, version = parse_location(where)
    assert (bucket, key) == (store.bucket, f"evidence/unit-1/{segment_filename(0)}")
    assert version and not path.exists()
    head = s3_server.client().head_object(Bucket=bucket, Key=key, VersionId=version, ChecksumMode="ENABLED")
    assert head["ObjectLockMode"] == "COMPLIANCE"
    left = head["ObjectLockRetainUntilDate"] - dt.datetime.now(dt.UTC)
    assert dt.timedelta(hours=23) < left <= dt.timedelta(days=1)
    assert head["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(original).digest()).decode()
    with store.get("unit-1", 0, where) as src:
        assert src.read() == original
    assert store.exists("unit-1", 0) and not store.exists("unit-1", 1)


def test_a_new_bucket_is_made_with_object_lock_and_default_compliance_retention(s3_server: S3Server) -> None:
    store = make_store(s3_server)
    conf = s3_server.client().get_object_lock_configuration(Bucket=store.bucket)["ObjectLockConfiguration"]
    assert conf == {"ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}}}


def test_a_bucket_without_object_lock_is_refused(s3_server: S3Server) -> None:
    bucket = fresh_bucket("plain")
    s3_server.client().create_bucket(Bucket=bucket)
    with pytest.raises(StorageError, match=f"opening evidence bucket {bucket}: it has no Object Lock"):
        make_store(s3_server, bucket)


def test_stored_evidence_cannot_be_deleted(s3_server: S3Server, tmp_path: Path) -> None:
    store = make_store(s3_server)
    path = sealed(tmp_path)
    original = path.read_bytes()
    bucket, key, version = parse_location(store.put("unit-1", 0, path))
    client = s3_server.client()
    assert refused(client.delete_object, Bucket=bucket, Key=key, VersionId=version) == "AccessDenied"
    assert refused(
        client.delete_object, Bucket=bucket, Key=key, VersionId=version, BypassGovernanceRetention=True
    ) == "AccessDenied"
    batch = client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": key, "VersionId": version}]})
    assert [e["Code"] for e in batch.get("Errors", [])] == ["AccessDenied"]
    # A delete without a version id only stacks a delete marker; the locked version stays.
    assert client.delete_object(Bucket=bucket, Key=key)["DeleteMarker"] is True
    assert client.get_object(Bucket=bucket, Key=key, VersionId=version)["Body"].read() == original
    assert refused(client.delete_bucket, Bucket=bucket) == "BucketNotEmpty"


def test_stored_evidence_cannot_be_overwritten(s3_server: S3Server, tmp_path: Path) -> None:
    store = make_store(s3_server)
    path = sealed(tmp_path)
    original = path.read_bytes()
    where = store.put("unit-1", 0, path)
    bucket, key, version = parse_location(where)
    # The same bytes again (a crash between storing and indexing) are answered with that version.
    again = tmp_path / "again.bcs"
    again.write_bytes(original)
    assert store.put("unit-1", 0, again) == where
    # Someone with write access puts other bytes under the key: a new version (itself locked by the
    # bucket's default retention), and the version the index names is intact.
    client = s3_server.client()
    forged = client.put_object(Bucket=bucket, Key=key, Body=b"forged")
    assert forged["VersionId"] != version
    assert client.head_object(Bucket=bucket, Key=key, VersionId=forged["VersionId"])["ObjectLockMode"] == "COMPLIANCE"
    with store.get("unit-1", 0, where) as src:
        assert src.read() == original
    # The store itself never puts other bytes where evidence is.
    with pytest.raises(StorageError, match="already holds other bytes"):
        store.put("unit-1", 0, sealed(tmp_path, "u2"))


def test_retention_cannot_be_shortened_nor_compliance_bypassed(s3_server: S3Server, tmp_path: Path) -> None:
    store = make_store(s3_server)
    bucket, key, version = parse_location(store.put("unit-1", 0, sealed(tmp_path)))
    client = s3_server.client()
    until = client.get_object_retention(Bucket=bucket, Key=key, VersionId=version)["Retention"]["RetainUntilDate"]
    earlier = {"Mode": "COMPLIANCE", "RetainUntilDate": until - dt.timedelta(hours=1)}
    common = {"Bucket": bucket, "Key": key, "VersionId": version}
    assert refused(client.put_object_retention, Retention=earlier, **common) == "AccessDenied"
    assert refused(
        client.put_object_retention, Retention=earlier, BypassGovernanceRetention=True, **common
    ) == "AccessDenied"
    weaker = {"Mode": "GOVERNANCE", "RetainUntilDate": until + dt.timedelta(hours=1)}
    assert refused(client.put_object_retention, Retention=weaker, BypassGovernanceRetention=True, **common) == (
        "AccessDenied"
    )
    later = until + dt.timedelta(days=1)
    client.put_object_retention(Retention={"Mode": "COMPLIANCE", "RetainUntilDate": later}, **common)
    kept = client.get_object_retention(**common)["Retention"]
    assert kept["Mode"] == "COMPLIANCE" and abs(kept["RetainUntilDate"] - later) < dt.timedelta(seconds=1)


def test_versioning_of_a_locked_bucket_cannot_be_suspended(s3_server: S3Server) -> None:
    store = make_store(s3_server)
    client = s3_server.client()
    status = {"Status": "Suspended"}
    assert refused(client.put_bucket_versioning, Bucket=store.bucket, VersioningConfiguration=status) == (
        "InvalidBucketState"
    )


def test_bytes_differing_from_the_declared_sha256_are_refused(s3_server: S3Server) -> None:
    store = make_store(s3_server)
    client = s3_server.client()
    wrong = base64.b64encode(hashlib.sha256(b"what the unit sent").digest()).decode()
    code = refused(
        client.put_object, Bucket=store.bucket, Key="evidence/unit-1/x.bcs", Body=b"what arrived",
        ChecksumAlgorithm="SHA256", ChecksumSHA256=wrong,
    )
    assert code in ("BadDigest", "XAmzContentChecksumMismatch", "InvalidDigest")
    assert refused(client.head_object, Bucket=store.bucket, Key="evidence/unit-1/x.bcs") == "404"


def test_quarantined_files_and_their_notes_are_locked(s3_server: S3Server, tmp_path: Path) -> None:
    store = make_store(s3_server)
    path = sealed(tmp_path)
    original = path.read_bytes()
    bucket, key, version = parse_location(store.quarantine("unit-1", "ab" * 16, path, {"code": "conflict"}))
    assert key == f"quarantine/unit-1/{'ab' * 16}.bcs" and not path.exists()
    client = s3_server.client()
    assert client.get_object(Bucket=bucket, Key=key, VersionId=version)["Body"].read() == original
    note = client.head_object(Bucket=bucket, Key=key[: -len(".bcs")] + ".json")
    body = client.get_object(Bucket=bucket, Key=key[: -len(".bcs")] + ".json")["Body"].read()
    assert json.loads(body) == {"code": "conflict"}
    for head in (client.head_object(Bucket=bucket, Key=key, VersionId=version), note):
        assert head["ObjectLockMode"] == "COMPLIANCE"
    assert refused(client.delete_object, Bucket=bucket, Key=key, VersionId=version) == "AccessDenied"


def test_without_conditional_writes_a_head_comes_first(s3_server: S3Server, tmp_path: Path) -> None:
    store = make_store(s3_server, conditional_writes="false")
    path = sealed(tmp_path)
    original = path.read_bytes()
    where = store.put("unit-1", 0, path)
    again = tmp_path / "again.bcs"
    again.write_bytes(original)
    assert store.put("unit-1", 0, again) == where
    with pytest.raises(StorageError, match="already holds other bytes"):
        store.put("unit-1", 0, sealed(tmp_path, "u2"))


def test_errors_say_what_was_being_done(s3_server: S3Server, tmp_path: Path) -> None:
    store = make_store(s3_server)
    with pytest.raises(StorageError, match=r"^reading unit-1 seq 7 from s3://.*/evidence/unit-1/.*: NoSuchKey"):
        store.get("unit-1", 7)


# -- SeaweedFS's known gaps against AWS S3 Object Lock (docs/deployment-hq.md) ----------------


def test_legal_hold_is_kept(s3_server: S3Server, tmp_path: Path) -> None:
    store = make_store(s3_server)
    bucket, key, version = parse_location(store.put("unit-1", 0, sealed(tmp_path)))
    client = s3_server.client()
    client.put_object_legal_hold(Bucket=bucket, Key=key, VersionId=version, LegalHold={"Status": "ON"})
    assert client.get_object_legal_hold(Bucket=bucket, Key=key, VersionId=version)["LegalHold"]["Status"] == "ON"


def test_known_gap_seaweedfs_own_file_api_deletes_a_locked_version(s3_server: S3Server, tmp_path: Path) -> None:
    """SeaweedFS enforces Object Lock in its S3 gateway only: its filer's HTTP API (unauthenticated
    by default) deletes a locked version. This is why production uses Ceph RGW or AWS S3; if this
    test fails, SeaweedFS closed the gap and docs/deployment-hq.md should say so."""
    store = make_store(s3_server)
    bucket, key, version = parse_location(store.put("unit-1", 0, sealed(tmp_path)))
    assert version is not None
    url = f"{s3_server.filer_url}/buckets/{bucket}/{key}.versions/v_{version}"
    with urllib.request.urlopen(urllib.request.Request(url, method="DELETE"), timeout=30) as answer:
        assert answer.status in (200, 202, 204)
    client = s3_server.client()
    assert refused(client.get_object, Bucket=bucket, Key=key, VersionId=version) in ("NoSuchVersion", "NoSuchKey")
