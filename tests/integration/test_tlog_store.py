"""The transparency log's storage and sequencer on both engines (SQLite and a real PostgreSQL):
the tree matches the reference, every proof verifies against its signed checkpoint, tiles are
c2sp.org/tlog-tiles', the tables are append-only, and appends racing from several engines (as
nodes) are sequenced into one consistent history."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.evidence import merkle, note
from agent.evidence.tlogproof import log_verifier
from hq.db.engine import make_engine, parse_url
from hq.index import SqlIndex
from hq.tlog import Leaf, SqlLog
from tests.integration.index_util import raw_error, raw_execute, run_together

KEY = ed25519.Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"tlog store test").digest())
ORIGIN = "hq.test/log"
VERIFIER = log_verifier(ORIGIN, KEY.public_key())


@pytest.fixture
def log(db_url: str) -> Iterator[SqlLog]:
    index = SqlIndex(make_engine(parse_url(db_url)), auto_migrate=True)
    try:
        yield SqlLog(index.engine, ORIGIN, KEY)
    finally:
        index.close()


def _leaf(i: int) -> Leaf:
    return Leaf("receipt", f"u{i % 3}", i, f"leaf {i}".encode() * (1 + i % 5))


def test_appends_build_the_reference_tree_with_proofs_and_tiles(log: SqlLog) -> None:
    ref = merkle.MemoryTree()
    checkpoints: dict[int, str] = {}
    i = 0
    for batch in (1, 1, 3, 250, 7, 1, 40):  # crosses a full level-0 tile at 256
        leaves = [_leaf(i + k) for k in range(batch)]
        i += batch
        done = log.append(leaves, now_ns=i)
        for leaf in leaves:
            ref.append(leaf.data)
        assert done.size == ref.size == log.size()
        cp = note.open_checkpoint(done.checkpoint, VERIFIER).checkpoint
        assert (cp.origin, cp.size, cp.root) == (ORIGIN, ref.size, ref.root())
        checkpoints[done.size] = done.checkpoint
    size = ref.size
    for index in (0, 1, 255, 256, size - 1):
        merkle.verify_inclusion(index, size, ref.node(0, index), log.inclusion(index, size), ref.root())
    for old in checkpoints:
        if old < size:
            merkle.verify_consistency(old, size, ref.root(old), ref.root(), log.consistency(old, size))
    assert log.tile(0, 0, 256) == b"".join(ref.node(0, k) for k in range(256))
    assert log.tile(1, 0, 1) == ref.node(8, 0)  # a full level-0 tile's hash is a level-1 tile entry
    assert log.tile(0, 1, size - 256) == b"".join(ref.node(0, k) for k in range(256, size))
    assert log.entries(3, 5) == [_leaf(3).data, _leaf(4).data]
    assert log.find("u1", "receipt", 4) == 4 and log.find("u1", "receipt", 5) is None
    assert log.checkpoint(5) == checkpoints[5]


def test_the_log_tables_are_append_only(log: SqlLog, db_url: str) -> None:
    log.append([_leaf(0), _leaf(1)], now_ns=1)
    for sql in ("UPDATE tlog_nodes SET hash = hash WHERE level = 0",
                "DELETE FROM tlog_entries", "UPDATE tlog_checkpoints SET note = 'x'", "DELETE FROM tlog_nodes"):
        with pytest.raises(raw_error(db_url), match="append-only"):
            raw_execute(db_url, sql)
    assert log.size() == 2


def test_appends_racing_from_several_nodes_make_one_history(db_url: str) -> None:
    nodes = [SqlIndex(make_engine(parse_url(db_url)), auto_migrate=True) for _ in range(2)]
    try:
        logs = [SqlLog(n.engine, ORIGIN, KEY) for n in nodes]
        got: list[tuple[str, int, bytes]] = []  # (checkpoint, first index, the leaf) of each append

        def work(n: int) -> None:
            for k in range(15):
                leaf = _leaf(1000 * n + k)
                done = logs[n % 2].append([leaf], now_ns=k)
                got.append((done.checkpoint, done.first_index, leaf.data))

        run_together(work, 4)
        log = logs[0]
        assert log.size() == 60
        data = log.entries(0, 60)
        assert sorted(data) == sorted(_leaf(1000 * n + k).data for n in range(4) for k in range(15))
        ref = merkle.MemoryTree(data)
        # every checkpoint handed out is a prefix of the one history
        for signed, first, leaf in got:
            cp = note.open_checkpoint(signed, VERIFIER).checkpoint
            assert cp.root == ref.root(cp.size)
            # each append learns its own place (appends racing in one process may share a commit)
            assert data[first] == leaf and cp.size > first
        assert sorted(first for _, first, _ in got) == list(range(60))
    finally:
        for n in nodes:
            n.close()
