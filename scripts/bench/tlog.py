"""tlog section: headquarters' transparency log at fleet rates (docs/transparency-log.md).

The fleet: 1,000 units, each logging a receipt per 10 s segment and a chain head per minute's
heartbeat: 116.7 appends a second. Measured on the embedded SQLite file and on a real PostgreSQL:
appends a second (one append a transaction, each signing its checkpoint, as ingest does), from one
thread and from four racing (ingest workers), and an inclusion proof's cost. Proof sizes are
computed exactly (the proof code run over placeholder hashes) for the tree a fleet grows in a
day and in a year: what each receipt and heartbeat answer carries.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import tempfile
import threading
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.evidence import merkle, note
from agent.evidence.tlogproof import encode_consistency, encode_inclusion
from hq.db.engine import make_engine, parse_url
from hq.index import SqlIndex
from hq.tlog import Leaf, SqlLog
from tests.pg_util import PostgresCluster, pg_bin_dir

from .common import Result, guarded

log = logging.getLogger("bench.tlog")

UNITS = 1000
FLEET_APPENDS_PER_S = UNITS * (1 / 10 + 1 / 60)
RECEIPT_BYTES = 460  # a receipt as signed today (canonical JSON and its signature)
THREADS = 4


def _leaf(i: int) -> Leaf:
    return Leaf("receipt", f"unit-{i % UNITS:04d}", i // UNITS, hashlib.sha256(b"%d" % i).digest() * 14)


def _appends(log_: SqlLog, count: int, threads: int) -> Result:
    per = count // threads
    done: list[float] = []
    start = threading.Barrier(threads)

    def work(n: int) -> None:
        start.wait(30)
        for k in range(per):
            log_.append([_leaf(n * per + k)], now_ns=k)
        done.append(time.perf_counter())

    began = time.perf_counter()
    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    seconds = max(done) - began
    return {"appends": per * threads, "threads": threads, "seconds": round(seconds, 3),
            "per_s": round(per * threads / seconds, 1)}


def _engine(url: str, count: int) -> Result:
    index = SqlIndex(make_engine(parse_url(url)), auto_migrate=True)
    try:
        key = ed25519.Ed25519PrivateKey.generate()
        log_ = SqlLog(index.engine, "bench.example/log", key)
        one = _appends(log_, count, 1)
        racing = _appends(log_, count, THREADS)
        size = log_.size()
        began = time.perf_counter()
        for i in range(0, size, max(1, size // 200)):
            log_.inclusion(i, size)
        proofs = len(range(0, size, max(1, size // 200)))
        return {"one_thread": one, "racing": racing, "tree_size": size,
                "inclusion_proof_ms": round((time.perf_counter() - began) * 1000 / proofs, 2),
                "fleet_appends_per_s": round(FLEET_APPENDS_PER_S, 1),
                "headroom_over_fleet": round(one["per_s"] / FLEET_APPENDS_PER_S, 2)}
    finally:
        index.close()


def _placeholder(level: int, index: int) -> bytes:
    return bytes(merkle.HASH_LEN)


def proof_sizes(size: int, step: int) -> Result:
    """Bytes of the proofs a tree of ``size`` leaves hands out (exact lengths; the worst leaf
    and a consistency proof across ``step`` appends)."""
    worst = max(len(merkle.inclusion_proof(_placeholder, i, size)) for i in (0, size // 2, size - 1))
    consistency = len(merkle.consistency_proof(_placeholder, size - step, size))
    key = ed25519.Ed25519PrivateKey.generate()
    signed = note.sign(note.Checkpoint("bodycam-hq/0123456789abcdef", size, bytes(32)).text(),
                       note.Signer("bodycam-hq/0123456789abcdef", key))
    return {"tree_size": size, "inclusion_hashes": worst, "inclusion_bytes": worst * merkle.HASH_LEN,
            "consistency_hashes": consistency, "checkpoint_bytes": len(signed.encode()),
            "receipt_header_bytes": _b64_len(encode_inclusion(size - 1, size, [bytes(32)] * worst, signed)),
            "heartbeat_answer_bytes": _b64_len(encode_consistency(size - step, [bytes(32)] * consistency, signed))}


def _b64_len(data: bytes) -> int:
    return len(base64.b64encode(data))


def run(quick: bool) -> Result:
    count = 400 if quick else 4000
    out: Result = {"units": UNITS, "fleet_appends_per_s": round(FLEET_APPENDS_PER_S, 1), "goal": round(
        FLEET_APPENDS_PER_S, 1)}
    with tempfile.TemporaryDirectory(prefix="bodycam-bench-tlog-") as tmp:
        out["sqlite"] = guarded("sqlite", lambda: _engine(f"sqlite:///{Path(tmp) / 'index.sqlite'}", count))
        if pg_bin_dir() is None:
            out["postgresql"] = {"error": "PostgreSQL is not installed (apt-get install -y postgresql)"}
        else:
            cluster = PostgresCluster().start()
            try:
                out["postgresql"] = guarded("postgresql", lambda: _engine(cluster.create_database("tlog"), count))
            finally:
                cluster.stop()
    per_minute = round(FLEET_APPENDS_PER_S * 60)
    out["proofs_after_a_day"] = proof_sizes(round(FLEET_APPENDS_PER_S * 86_400), per_minute)
    out["proofs_after_a_year"] = proof_sizes(round(FLEET_APPENDS_PER_S * 86_400 * 365), per_minute)
    return out
