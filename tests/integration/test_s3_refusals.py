"""What the S3 evidence store does when a server acknowledges less than it should: no location, no
receipt, the bytes kept for a retry. The server is the real SeaweedFS; ``Misreporting`` is a
hand-written stand-in for a server that misreports one answer (a missing version id, another
SHA-256, no lock), passing everything else through."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from hq.index import SqliteIndex
from hq.s3store import S3EvidenceStore, connect
from hq.s3uploads import S3UploadStore
from hq.service import INGEST_HEADER, HqService
from hq.storage import StorageError
from hq.storeurl import parse_store_url
from tests.evidence_util import ChainBuilder
from tests.s3_util import S3Server, fresh_bucket
from tests.unit.test_hq_tus import create_headers, enroll, patch_headers, upload_id


class Misreporting:
    """An S3 client whose answers to one operation are rewritten by ``edit``."""

    def __init__(self, client: Any, operation: str, edit: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        self._client = client
        self._operation = operation
        self._edit = edit

    def __getattr__(self, name: str) -> Any:
        real = getattr(self._client, name)
        if name != self._operation:
            return real

        def call(**kwargs: Any) -> Any:
            return self._edit(real(**kwargs))

        return call


def store_over(s3: S3Server, operation: str, edit: Callable[[dict[str, Any]], dict[str, Any]]) -> S3EvidenceStore:
    config = parse_store_url(s3.store_url(fresh_bucket(), retention_days=1))
    honest = connect(config, s3.session())
    S3EvidenceStore(honest, config, time.time_ns).prepare()
    return S3EvidenceStore(Misreporting(honest, operation, edit), config, time.time_ns)


def without(key: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda answer: {k: v for k, v in answer.items() if k != key}


@pytest.mark.parametrize(
    ("operation", "edit", "says"),
    [
        ("put_object", without("VersionId"), "kept no version id"),
        ("put_object", lambda a: {**a, "ChecksumSHA256": "AAAA"}, "acknowledged SHA-256 'AAAA'"),
        ("head_object", without("ObjectLockMode"), "did not lock it"),
    ],
)
def test_an_unconfirmed_write_is_not_a_stored_one(
    s3_server: S3Server, tmp_path: Path, operation: str, edit: Callable[[dict[str, Any]], dict[str, Any]], says: str
) -> None:
    store = store_over(s3_server, operation, edit)
    path = ChainBuilder(tmp_path / "u1", device_id="unit-1").segment()
    with pytest.raises(StorageError, match=f"storing unit-1 seq 0 as s3://{store.bucket}/.*: .*{says}"):
        store.put("unit-1", 0, path)
    assert path.is_file()  # kept for a retry


def test_no_receipt_without_a_confirmed_locked_write(s3_server: S3Server, tmp_path: Path) -> None:
    store = store_over(s3_server, "head_object", without("ObjectLockMode"))
    index = SqliteIndex(tmp_path / "index.sqlite")
    unit = ChainBuilder(tmp_path / "unit", device_id="unit-1")
    enroll(index, unit.signer, "unit-1")
    uploads = S3UploadStore(s3_server.client(), store.config, tmp_path / "spool")
    uploads.prepare()
    service = HqService(index, store, uploads, ed25519.Ed25519PrivateKey.generate(), time.time_ns)
    path = unit.event("boot")
    data = path.read_bytes()
    uid = upload_id(service.create("unit-1", create_headers(path, 0)))
    answer = service.patch("unit-1", uid, patch_headers(0, data), data)
    service.close()
    # Every byte is held but nothing is stored: no receipt, ingest "pending" (tried again later).
    assert answer.status == 204 and "Bodycam-Receipt" not in answer.headers
    assert answer.headers[INGEST_HEADER] == "pending"
    assert index.evidence("unit-1", 0) is None
    upload = index.upload(uid)
    assert upload is not None and upload.state == "complete" and upload.result is None
    # The bytes stay in staging for the next try; the spooled copy is gone.
    assert uploads.size(uid) == len(data)
    assert list((tmp_path / "spool").iterdir()) == []
    index.close()
