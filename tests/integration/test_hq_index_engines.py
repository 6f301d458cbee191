"""One behavioural suite for the index, run on SQLite and on a real PostgreSQL (tests/pg_util.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from hq.db import migrate as migrations
from hq.db.engine import make_engine, parse_url
from hq.index import HqIndexError, SqlIndex
from hq.records import AuditRecord, Evidence, Quarantined, Upload
from tests.integration.index_util import cli_url, raw_error, raw_execute, run_hq, run_together
from tests.pg_util import free_port

T0_NS = 1_790_000_000_000_000_000


@pytest.fixture
def index(db_url: str) -> Iterator[SqlIndex]:
    with SqlIndex.open(db_url, auto_migrate=True) as opened:
        yield opened


def entry(device_id: str, seq: int) -> Evidence:
    return Evidence(device_id, seq, "segment", f"{seq:064x}", "00" * 32, "ab" * 32, 100 + seq,
                    T0_NS + seq, T0_NS + seq + 1, T0_NS + 10, "verified", f"{device_id}/{seq}", f"{seq:032x}")


def test_enrolment_is_unique_by_id_and_key(index: SqlIndex) -> None:
    index.enroll("unit-1", "pem", "ab" * 32, T0_NS)
    with pytest.raises(HqIndexError, match="enrolling unit-1"):
        index.enroll("unit-1", "pem2", "cd" * 32, T0_NS)
    with pytest.raises(HqIndexError):
        index.enroll("unit-2", "pem", "ab" * 32, T0_NS)
    assert index.revoke("unit-1", T0_NS + 1)
    assert not index.revoke("unit-1", T0_NS + 2)
    device = index.device("unit-1")
    assert device is not None and not device.active and device.revoked_utc_ns == T0_NS + 1
    assert index.device_by_fingerprint("ab" * 32) == device
    assert index.device("unit-2") is None


def test_uploads_are_found_by_entry_and_finished(index: SqlIndex) -> None:
    index.enroll("unit-1", "pem", "ab" * 32, T0_NS)
    upload = Upload("a" * 32, "unit-1", 7, "7.bcs", "cd" * 32, 4 << 30, "receiving", T0_NS, T0_NS)
    index.add_upload(upload)
    assert index.upload("a" * 32) == upload
    assert index.find_upload("unit-1", 7, "cd" * 32, ("receiving",)) == upload
    assert index.find_upload("unit-1", 7, "cd" * 32, ("stored",)) is None
    index.finish_upload("a" * 32, "stored", {"receipt": "x"}, T0_NS + 5)
    done = index.upload("a" * 32)
    assert done is not None
    assert (done.state, done.result, done.updated_utc_ns) == ("stored", {"receipt": "x"}, T0_NS + 5)
    assert index.uploads("receiving") == [] and [u.upload_id for u in index.uploads("stored")] == ["a" * 32]
    with pytest.raises(HqIndexError):  # the state is checked by the database
        index.finish_upload("a" * 32, "lost", None, T0_NS + 6)


def test_evidence_advances_the_contiguous_run_over_gaps(index: SqlIndex) -> None:
    index.enroll("unit-1", "pem", "ab" * 32, T0_NS)
    assert index.add_evidence(entry("unit-1", 0)) == 0
    assert index.add_evidence(entry("unit-1", 2)) == 0
    assert index.add_evidence(entry("unit-1", 3)) == 0
    assert index.add_evidence(entry("unit-1", 1)) == 3
    assert index.chain_head("unit-1") == (3, f"{3:064x}")
    assert index.chain_head("unit-2") is None
    with pytest.raises(HqIndexError):
        index.add_evidence(entry("unit-1", 2))
    index.set_receipt("unit-1", 2, b"\x00signed")
    got = index.evidence("unit-1", 2)
    assert got is not None and got.receipt == b"\x00signed" and got == entry("unit-1", 2).__class__(
        **{**{n: getattr(entry("unit-1", 2), n) for n in Evidence.__slots__}, "receipt": b"\x00signed"})
    assert [e.seq for e in index.evidence_list("unit-1", from_ns=T0_NS + 2, to_ns=T0_NS + 2)] == [1, 2]
    device = index.device("unit-1")
    assert device is not None and device.contiguous_through == 3


def test_quarantine_is_listed_per_device(index: SqlIndex) -> None:
    q = Quarantined("q1", "unit-9", None, "b" * 32, "ef" * 32, "bad-signature", "no", "quarantine/unit-9/q1", T0_NS)
    index.add_quarantine(q)
    assert index.quarantined("unit-9") == [q] and index.quarantined() == [q] and index.quarantined("unit-1") == []


def test_nonces_are_remembered_for_their_lifetime(index: SqlIndex) -> None:
    assert not index.nonce_seen("unit-1", "n1", 1000, 600)
    assert index.nonce_seen("unit-1", "n1", 1001, 600)
    assert not index.nonce_seen("unit-2", "n1", 1001, 600)
    assert index.nonce_seen("unit-1", "n1", 1600, 600)
    assert not index.nonce_seen("unit-1", "n1", 1601, 600)


def test_two_nodes_racing_on_the_same_nonces_admit_each_exactly_once(db_url: str) -> None:
    """Three index instances (as three nodes) check the same 200 nonces at the same time."""
    nodes = [SqlIndex.open(db_url, auto_migrate=True) for _ in range(2)]
    nodes.append(SqlIndex.open(db_url))
    fresh: list[list[str]] = [[] for _ in nodes]

    def work(n: int) -> None:
        for i in range(200):
            if not nodes[n].nonce_seen("unit-1", f"nonce-{i}", 5000, 600):
                fresh[n].append(f"nonce-{i}")

    try:
        run_together(work, len(nodes))
    finally:
        for node in nodes:
            node.close()
    admitted = sorted(n for per_node in fresh for n in per_node)
    assert admitted == sorted(f"nonce-{i}" for i in range(200))


def test_heartbeats_keep_the_last_status(index: SqlIndex) -> None:
    index.enroll("unit-1", "pem", "ab" * 32, T0_NS)
    index.add_heartbeat("unit-1", T0_NS, b'{"a":1}', {"battery": {"percent": 80}})
    index.add_heartbeat("unit-1", T0_NS + 1, b'{"a":2}', {"battery": {"percent": 79}})
    assert index.heartbeats("unit-1") == [(T0_NS, b'{"a":1}'), (T0_NS + 1, b'{"a":2}')]
    device = index.device("unit-1")
    assert device is not None and device.last_status == {"battery": {"percent": 79}}
    assert device.last_heartbeat_utc_ns == T0_NS + 1


def test_the_audit_log_refuses_change_even_on_a_raw_connection(index: SqlIndex, db_url: str) -> None:
    record = AuditRecord(T0_NS, "hq-api", "ingest", "unit-1", "unit-1/0", "ok", {"why": "test"})
    index.audit(record)
    [held] = index.audit_log()
    assert held.id is not None and (held.utc_ns, held.detail) == (T0_NS, {"why": "test"})
    with pytest.raises(HqIndexError):
        index.audit(AuditRecord(T0_NS, "hq-api", "ingest", "unit-1", "unit-1/0", "maybe", {}))
    statements = ["UPDATE audit SET outcome = 'refused'", "DELETE FROM audit"]
    if not db_url.startswith("sqlite"):
        statements.append("TRUNCATE audit")
    for sql in statements:
        with pytest.raises(raw_error(db_url), match="append-only"):
            raw_execute(db_url, sql)
    assert index.audit_log() == [held]


def test_ping_answers_while_the_database_is_reachable(index: SqlIndex, db_url: str) -> None:
    index.ping()
    if db_url.startswith("postgresql"):  # a node whose database went away: one line, no password
        gone = SqlIndex.__new__(SqlIndex)
        gone.engine = make_engine(parse_url(db_url).set(port=free_port()))
        with pytest.raises(HqIndexError, match="reaching the index") as caught:
            gone.ping()
        assert str(parse_url(db_url).password) not in str(caught.value)


def test_open_on_an_unmigrated_database_is_refused(db_url: str) -> None:
    with pytest.raises(HqIndexError, match="has no schema yet.*run `bodycam-hq migrate --database-url"):
        SqlIndex.open(db_url)


def test_migrate_then_enroll_through_the_command_line_with_the_password_from_the_environment(
    db_url: str, tmp_path: Path
) -> None:
    url, env = cli_url(db_url)
    done = run_hq("migrate", "--database-url", url, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith(f"to revision {migrations.head_revision()}")
    data = tmp_path / "H"
    data.mkdir()
    (data / "keys").mkdir()
    unit_pub = _device_pub(tmp_path)
    done = run_hq("enroll", "--data-dir", str(data), "--database-url", url, "--device-id", "unit-5",
                  "--device-pub", str(unit_pub), env=env)
    assert done.returncode == 0, done.stderr
    with SqlIndex.open(db_url) as index:
        assert [d.device_id for d in index.devices()] == ["unit-5"]
        assert [(a.event_type, a.outcome) for a in index.audit_log()] == [("enroll", "ok")]
    assert not (data / "index.sqlite").exists()  # the named database was used, not the data dir's


def _device_pub(folder: Path) -> Path:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from agent.evidence.keys import public_pem

    path = folder / "device.pub"
    path.write_bytes(public_pem(ed25519.Ed25519PrivateKey.generate().public_key()))
    return path


def test_a_wrong_password_is_one_line_without_the_password(postgres_url: str) -> None:
    wrong = parse_url(postgres_url).set(password="not-the-Password-42")
    shown = wrong.render_as_string(hide_password=False)
    done = run_hq("migrate", "--database-url", shown)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "password authentication failed" in lines[0], done.stderr
    assert "not-the-Password-42" not in done.stderr + done.stdout


def audit_some(index: SqlIndex, count: int, actor: str = "admin") -> list[AuditRecord]:
    for n in range(count):
        index.audit(AuditRecord(T0_NS + n, "hq-cli", "enroll", actor, f"unit-{n}", "ok", {"n": n, "note": "é"}))
    return index.audit_log()


def lift_audit_trigger(db_url: str) -> None:
    """What an attacker holding the database's superuser does first."""
    if db_url.startswith("sqlite"):
        raw_execute(db_url, "DROP TRIGGER audit_no_update")
        raw_execute(db_url, "DROP TRIGGER audit_no_delete")
    else:
        raw_execute(db_url, "ALTER TABLE audit DISABLE TRIGGER audit_no_change")


def test_the_audit_chain_is_intact_and_the_command_says_so(index: SqlIndex, db_url: str) -> None:
    log = audit_some(index, 5)
    assert log[0].prev_sha256 == "0" * 64
    assert all(b.prev_sha256 == a.sha256 for a, b in zip(log, log[1:], strict=False))
    report = index.verify_audit(batch_rows=2)  # batches that split the chain
    assert report.intact and report.records == 5 and report.head_sha256 == log[-1].sha256
    url, env = cli_url(db_url)
    done = run_hq("audit", "verify", "--database-url", url, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"5 records, chain intact, head {log[-1].sha256}"


@pytest.mark.parametrize("attack", ["change", "change-and-rehash", "delete"])
def test_tampering_by_a_database_superuser_is_found(index: SqlIndex, db_url: str, attack: str) -> None:
    from hq.db.chain import record_hash

    log = audit_some(index, 6)
    victim = log[2]
    lift_audit_trigger(db_url)
    if attack == "delete":
        raw_execute(db_url, f"DELETE FROM audit WHERE id = {victim.id}")
    else:
        raw_execute(db_url, f"UPDATE audit SET actor = 'someone-else' WHERE id = {victim.id}")
    if attack == "change-and-rehash":  # the attacker fixes the changed record's own hash
        digest = record_hash(str(victim.prev_sha256), victim.utc_ns, victim.component, victim.event_type,
                             "someone-else", victim.target, victim.outcome,
                             json.dumps(victim.detail, sort_keys=True))
        raw_execute(db_url, f"UPDATE audit SET sha256 = '{digest}' WHERE id = {victim.id}")
    report = index.verify_audit(batch_rows=4)
    first_bad = log[2] if attack == "change" else log[3]
    assert not report.intact and report.broken_id == first_bad.id
    assert report.records == (2 if attack == "change" else 2 if attack == "delete" else 3)
    url, env = cli_url(db_url)
    done = run_hq("audit", "verify", "--database-url", url, env=env)
    assert done.returncode == 1
    assert done.stdout.startswith(f"audit record {first_bad.id}: "), done.stdout + done.stderr


def test_two_nodes_appending_at_once_keep_one_chain(db_url: str) -> None:
    nodes = [SqlIndex.open(db_url, auto_migrate=True) for _ in range(2)]

    def work(n: int) -> None:
        audit_some(nodes[n], 40, actor=f"node-{n}")

    try:
        run_together(work, 2)
        report = nodes[0].verify_audit()
        actors = [a.actor for a in nodes[1].audit_log()]
    finally:
        for node in nodes:
            node.close()
    assert report.intact and report.records == 80
    assert sorted(actors) == ["node-0"] * 40 + ["node-1"] * 40
