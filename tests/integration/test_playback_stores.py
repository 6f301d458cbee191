"""Playback through ``bodycam-hq decryptd`` run as its own process, with evidence in the file store
and in S3 under Object Lock, and evidence search on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import av
import pytest

from agent.evidence.keys import generate_hq_key, load_hq_private
from hq.audit import Auditor
from hq.decrypt_client import DecryptClient
from hq.evidence_service import EvidenceService
from hq.index import SqlIndex, SqliteIndex
from hq.records import RecordingFilter
from hq.s3store import S3EvidenceStore, connect
from hq.storage import EvidenceStore, FileEvidenceStore
from hq.storeurl import parse_store_url
from tests.playback_daemon import DecryptDaemon
from tests.playback_util import Recording, ingest, record
from tests.s3_util import S3Server, fresh_bucket

T0_NS = 1_790_000_000_000_000_000


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Recording]:
    keys = tmp_path_factory.mktemp("keys")
    generate_hq_key(keys / "hq.key", keys / "hq.pub")
    rec = record(tmp_path_factory.mktemp("unit"), seconds=4.0, hq_key=load_hq_private(keys / "hq.key"))
    return keys / "hq.key", rec


@pytest.fixture
def daemon(tmp_path: Path, keyed: tuple[Path, Recording]) -> Iterator[DecryptDaemon]:
    run = tmp_path / "run"
    run.mkdir(mode=0o750)
    d = DecryptDaemon(keyed[0], run / "decryptd.sock")
    try:
        yield d
    finally:
        assert d.stop() == 0
        assert not d.socket.exists()


def _play(index: SqlIndex, store: EvidenceStore, daemon: DecryptDaemon, rec: Recording) -> int:
    service = EvidenceService(index, store, DecryptClient(daemon.socket), Auditor(index, "hq-web", time.time_ns),
                              time.time_ns)
    view = service.recording("sup1", rec.device_id, rec.recording_id)
    mp4 = b"".join(service.play("sup1", view))
    with av.open(io.BytesIO(mp4)) as c:
        return sum(1 for _ in c.decode(video=0))


def test_the_daemon_listens_owner_only_and_plays_from_the_file_store(
    tmp_path: Path, keyed: tuple[Path, Recording], daemon: DecryptDaemon
) -> None:
    assert stat.S_IMODE(daemon.socket.stat().st_mode) == 0o600
    with SqliteIndex(tmp_path / "index.sqlite") as index:
        store = FileEvidenceStore(tmp_path)
        ingest(index, store, tmp_path, keyed[1], T0_NS)
        assert _play(index, store, daemon, keyed[1]) == 40
    assert b"decrypted" in daemon.log.read_bytes()  # it logs each request, never the key


def test_evidence_in_s3_under_object_lock_plays(
    tmp_path: Path, keyed: tuple[Path, Recording], daemon: DecryptDaemon, s3_server: S3Server
) -> None:
    config = parse_store_url(s3_server.store_url(fresh_bucket(), retention_days=1))
    store = S3EvidenceStore(connect(config, s3_server.session()), config, time.time_ns)
    store.prepare()
    with SqliteIndex(tmp_path / "index.sqlite") as index:
        ingest(index, store, tmp_path, keyed[1], T0_NS)
        assert all(e.location.startswith("s3://") for e in index.evidence_list(keyed[1].device_id))
        assert _play(index, store, daemon, keyed[1]) == 40


def test_the_daemon_refuses_a_key_others_can_read(tmp_path: Path, keyed: tuple[Path, Recording]) -> None:
    loose = tmp_path / "hq.key"
    loose.write_bytes(keyed[0].read_bytes())
    os.chmod(loose, 0o644)
    with pytest.raises(AssertionError, match="decryptd did not come up"):
        DecryptDaemon(loose, tmp_path / "d.sock", timeout_s=10)
    assert "hq.key" in (tmp_path / "decryptd.log").read_text()


def test_search_on_both_engines(db_url: str, tmp_path: Path, keyed: tuple[Path, Recording]) -> None:
    rec = keyed[1]
    with SqlIndex.open(db_url, auto_migrate=True) as index:
        ingest(index, FileEvidenceStore(tmp_path), tmp_path, rec, T0_NS)
        other = record(tmp_path / "u2", device_id="unit-p2", seconds=2.0, marks_at_s=())
        ingest(index, FileEvidenceStore(tmp_path), tmp_path, other, T0_NS)
        rows, total = index.search_recordings(RecordingFilter(limit=1))
        assert total == 2 and len(rows) == 1
        assert {r.device_id for r in rows + index.search_recordings(RecordingFilter(limit=1, offset=1))[0]} == {
            "unit-p1", "unit-p2"}
        marked, _ = index.search_recordings(RecordingFilter(marked=True))
        assert [(r.device_id, r.marks, r.status) for r in marked] == [("unit-p1", 1, "verified")]
        assert index.search_recordings(RecordingFilter(recording_id=rec.recording_id[:6], status="verified"))[1] == 1
        assert [e.kind for e in index.recording_entries("unit-p2", other.recording_id)].count("segment") == 1
