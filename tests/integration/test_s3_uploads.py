"""Uploads in progress in an S3 staging bucket (real SeaweedFS): two store instances stand for two
headquarters nodes; an upload started through one resumes through the other."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

import pytest

from hq.s3store import connect
from hq.s3uploads import S3UploadStore, part_key
from hq.storage import StorageError
from hq.storeurl import parse_store_url
from tests.s3_util import S3Server, fresh_bucket


def node(s3: S3Server, staging: str, spool: Path) -> S3UploadStore:
    config = parse_store_url(s3.store_url(fresh_bucket(), staging_bucket=staging))
    store = S3UploadStore(connect(config, s3.session()), config, spool)
    store.prepare()
    return store


@pytest.fixture
def staging() -> str:
    return fresh_bucket("stage")


def test_an_upload_started_on_one_node_completes_on_another(
    s3_server: S3Server, staging: str, tmp_path: Path
) -> None:
    a, b = node(s3_server, staging, tmp_path / "a"), node(s3_server, staging, tmp_path / "b")
    data = os.urandom(3 * 1024 * 1024 + 12345)
    uid = secrets.token_hex(16)
    a.create(uid)
    assert a.size(uid) == 0
    assert a.append(uid, 0, data[: 1024 * 1024]) == 1024 * 1024
    # Node a is gone; the unit's HEAD and PATCHes reach node b, which has never seen this upload.
    assert b.size(uid) == 1024 * 1024
    assert b.append(uid, 1024 * 1024, data[1024 * 1024 : 2 * 1024 * 1024]) == 2 * 1024 * 1024
    # a comes back: its cached end is stale, the listing after it is not.
    assert a.size(uid) == 2 * 1024 * 1024
    assert a.append(uid, 2 * 1024 * 1024, data[2 * 1024 * 1024 :]) == len(data)
    with b.completed(uid) as path:
        assert path.read_bytes() == data
        assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.parent == tmp_path / "b"
    assert not path.exists()
    b.remove(uid)
    # (a still remembers the end it saw: a removed upload's state in the index is final, so no
    # node asks its size again.)
    assert b.size(uid) == 0 and node(s3_server, staging, tmp_path / "c").size(uid) == 0
    assert s3_server.client().list_objects_v2(Bucket=staging, Prefix=f"staging/{uid}/").get("KeyCount") == 0


def test_a_part_at_a_wrong_offset_is_ignored(s3_server: S3Server, staging: str, tmp_path: Path) -> None:
    store = node(s3_server, staging, tmp_path)
    uid = secrets.token_hex(16)
    store.create(uid)
    store.append(uid, 0, b"0123456789")
    # A part that does not begin at the upload's end (a node that died between its checks).
    s3_server.client().put_object(Bucket=staging, Key=part_key(uid, 15), Body=b"XXXXX")
    assert store.size(uid) == 10
    with pytest.raises(StorageError, match="offset 15 is not the end of the upload"):
        store.append(uid, 15, b"abc")
    assert store.append(uid, 10, b"abcdefghijklmnopqrst") == 30
    with store.completed(uid) as path:
        assert path.read_bytes() == b"0123456789abcdefghijklmnopqrst"


def test_two_nodes_appending_at_the_same_offset_one_wins(s3_server: S3Server, staging: str, tmp_path: Path) -> None:
    a, b = node(s3_server, staging, tmp_path / "a"), node(s3_server, staging, tmp_path / "b")
    uid = secrets.token_hex(16)
    assert a.size(uid) == 0 and b.size(uid) == 0
    a.append(uid, 0, b"first")
    with pytest.raises(StorageError, match="offset 0 is not the end of the upload"):
        b.append(uid, 0, b"second")
    with b.completed(uid) as path:
        assert path.read_bytes() == b"first"


def test_the_staging_bucket_expires_abandoned_uploads(s3_server: S3Server, staging: str, tmp_path: Path) -> None:
    node(s3_server, staging, tmp_path)
    [rule] = s3_server.client().get_bucket_lifecycle_configuration(Bucket=staging)["Rules"]
    assert (rule["Filter"], rule["Status"], rule["Expiration"]) == ({"Prefix": "staging/"}, "Enabled", {"Days": 7})


def test_a_staging_bucket_under_object_lock_is_refused(s3_server: S3Server, tmp_path: Path) -> None:
    locked = fresh_bucket("stage")
    s3_server.client().create_bucket(Bucket=locked, ObjectLockEnabledForBucket=True)
    with pytest.raises(StorageError, match=f"opening staging bucket {locked}: it has Object Lock"):
        node(s3_server, locked, tmp_path)


def test_malformed_upload_ids_are_refused(s3_server: S3Server, staging: str, tmp_path: Path) -> None:
    store = node(s3_server, staging, tmp_path)
    with pytest.raises(StorageError, match="is malformed"):
        store.size("../../evidence")
