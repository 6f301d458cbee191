"""The index's schema migrations on SQLite: data dirs of the first release upgrade in place, the
embedded default migrates on opening, a named database that is behind is refused."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from hq.cli import main
from hq.db import migrate as migrations
from hq.db.engine import make_engine, mask, parse_url
from hq.index import HqIndexError, SqlIndex, SqliteIndex, open_index
from tests.unit.hq_schema_v1 import make_v1_index

T0_NS = 1_790_000_000_000_000_000


def v1_data_dir(data_dir: Path) -> Path:
    """A data dir as the first release left it: a unit enrolled, an entry held, audit records."""
    data_dir.mkdir()
    (data_dir / "keys").mkdir()
    conn = make_v1_index(data_dir / "index.sqlite")
    conn.execute("INSERT INTO devices (device_id, public_pem, fingerprint, enrolled_utc_ns) "
                 "VALUES ('unit-1', 'pem', ?, ?)", ("ab" * 32, T0_NS))
    conn.execute("INSERT INTO uploads VALUES ('u1', 'unit-1', 0, 'f', ?, 10, 'stored', ?, ?, '{}')",
                 ("cd" * 32, T0_NS, T0_NS))
    conn.execute("INSERT INTO evidence (device_id, seq, kind, manifest_sha256, prev, file_sha256, size_bytes, "
                 "utc_start_ns, utc_end_ns, received_utc_ns, status, location, upload_id, receipt) "
                 "VALUES ('unit-1', 0, 'segment', ?, ?, ?, 10, ?, ?, ?, 'verified', 'x', 'u1', x'0102')",
                 ("ee" * 32, "00" * 32, "cd" * 32, T0_NS, T0_NS + 1, T0_NS + 2))
    conn.execute("INSERT INTO heartbeats (device_id, received_utc_ns, body) VALUES ('unit-1', ?, x'7b7d')", (T0_NS,))
    for n, event in enumerate(("enroll", "ingest", "service-stop")):
        conn.execute("INSERT INTO audit (utc_ns, component, event_type, actor, target, outcome, detail) "
                     "VALUES (?, 'hq-cli', ?, 'admin', 'unit-1', 'ok', ?)",
                     (T0_NS + n, event, json.dumps({"n": n})))
    conn.close()
    return data_dir


def test_a_first_release_data_dir_upgrades_in_place_keeping_every_row(tmp_path: Path) -> None:
    data_dir = v1_data_dir(tmp_path / "H")
    with open_index(data_dir) as index:
        device = index.device("unit-1")
        assert device is not None and device.fingerprint == "ab" * 32
        entry = index.evidence("unit-1", 0)
        assert entry is not None and entry.receipt == b"\x01\x02" and entry.size_bytes == 10
        assert [u.upload_id for u in index.uploads("stored")] == ["u1"]
        assert index.heartbeats("unit-1") == [(T0_NS, b"{}")]
        assert [(a.event_type, a.detail) for a in index.audit_log()] == [
            ("enroll", {"n": 0}), ("ingest", {"n": 1}), ("service-stop", {"n": 2})]
        index.audit(index.audit_log()[0])  # and it takes new rows
        assert len(index.audit_log()) == 4
        report = index.verify_audit()  # the old records were chained, in their order, by the upgrade
        assert report.intact and report.records == 4
    raw = sqlite3.connect(data_dir / "index.sqlite")
    try:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == migrations.MANAGED_USER_VERSION
        assert raw.execute("SELECT version_num FROM alembic_version").fetchone()[0] == migrations.head_revision()
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            raw.execute("DELETE FROM audit")
    finally:
        raw.close()


def test_an_index_of_the_release_with_ingest_states_and_no_migrations_upgrades(tmp_path: Path) -> None:
    """PRAGMA user_version 2: the first release's schema with the uploads' CHECK widened."""
    data_dir = v1_data_dir(tmp_path / "H")
    raw = sqlite3.connect(data_dir / "index.sqlite", isolation_level=None)
    sql = raw.execute("SELECT sql FROM sqlite_master WHERE name = 'uploads'").fetchone()[0]
    raw.execute("ALTER TABLE uploads RENAME TO old")
    raw.execute(sql.replace("'receiving', ", "'receiving', 'complete', 'ingesting', "))
    raw.execute("INSERT INTO uploads SELECT * FROM old")
    raw.execute("DROP TABLE old")
    raw.execute("UPDATE uploads SET state = 'ingesting'")
    raw.execute("PRAGMA user_version=2")
    raw.close()
    with open_index(data_dir) as index:
        [upload] = index.uploads("ingesting")
        assert upload.upload_id == "u1"
        assert index.verify_audit().records == 3
        assert index.move_upload("u1", "ingesting", "expired", T0_NS)


def test_migrate_prints_the_revision_and_is_idempotent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = v1_data_dir(tmp_path / "H")
    assert main(["migrate", "--data-dir", str(data_dir)]) == 0
    head = migrations.head_revision()
    assert f"migrated from legacy to revision {head}" in capsys.readouterr().out
    assert main(["migrate", "--database-url", f"sqlite:///{data_dir / 'index.sqlite'}"]) == 0
    assert f"already at revision {head}" in capsys.readouterr().out


def test_a_named_database_that_is_behind_is_refused_with_the_command_to_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = v1_data_dir(tmp_path / "H")
    url = f"sqlite:///{data_dir / 'index.sqlite'}"
    with pytest.raises(HqIndexError, match=r"run `bodycam-hq migrate --database-url sqlite:///"):
        SqlIndex.open(url)
    assert main(["revoke", "--data-dir", str(data_dir), "--database-url", url, "--device-id", "unit-1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is at revision legacy" in err[0] and "bodycam-hq migrate" in err[0]
    # nothing was changed: the unit is still enrolled, the file still the first release's
    raw = sqlite3.connect(data_dir / "index.sqlite")
    try:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == 1
        assert raw.execute("SELECT revoked_utc_ns FROM devices").fetchone()[0] is None
    finally:
        raw.close()


def test_serve_on_a_named_database_that_is_behind_refuses_before_listening(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = v1_data_dir(tmp_path / "H")
    assert main(["keygen", "--data-dir", str(data_dir), "--force"]) == 0
    capsys.readouterr()
    url = f"sqlite:///{data_dir / 'index.sqlite'}"
    assert main(["serve", "--data-dir", str(data_dir), "--database-url", url, "--listen", "127.0.0.1:0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bodycam-hq serve: the index at sqlite:///")
    assert err[0].endswith(f"run `bodycam-hq migrate --database-url {url}` first")


def test_an_empty_named_database_is_refused_until_migrated(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fleet.sqlite'}"
    with pytest.raises(HqIndexError, match="has no schema yet"):
        SqlIndex.open(url)
    engine = make_engine(parse_url(url))
    try:
        assert migrations.upgrade(engine) == migrations.head_revision()
    finally:
        engine.dispose()
    with SqlIndex.open(url) as index:
        index.enroll("unit-1", "pem", "ab" * 32, T0_NS)
        assert [d.device_id for d in index.devices()] == ["unit-1"]


def test_an_index_newer_than_this_software_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "i.sqlite"
    make_v1_index(path).execute("PRAGMA user_version=9").connection.close()
    with pytest.raises(HqIndexError, match="newer than this software"):
        SqliteIndex(path)


def test_urls_are_shown_without_their_password() -> None:
    shown = mask("postgresql+psycopg://hq:s3cret-pw@db.example:5432/bodycam")
    assert "s3cret-pw" not in shown and "hq:***@db.example:5432/bodycam" in shown
    with pytest.raises(HqIndexError) as caught:
        parse_url("mysql://hq:s3cret-pw@db.example/bodycam")
    assert "s3cret-pw" not in str(caught.value) and "only sqlite" in str(caught.value)
    with pytest.raises(HqIndexError, match="needs a file"):
        parse_url("sqlite://")
