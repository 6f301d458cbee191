"""Headquarters' transparency log: an append-only RFC 6962 Merkle tree of receipts and heartbeat
chain heads, its signed checkpoints and witnesses' cosignatures (docs/transparency-log.md).

``TransparencyLog`` is what the service needs; ``SqlLog`` implements it over the index's
SQLAlchemy engine, so it runs on the embedded SQLite file and on the fleet's PostgreSQL alike.
It keeps each leaf, the hash of every perfect subtree (``tlog_nodes``: level 0 the leaf hashes;
the tiles of c2sp.org/tlog-tiles are rows of it) and each checkpoint it signed.

*Sequencing.* One append is one transaction that reads the tree size, writes the leaves, the new
subtree hashes and the signed checkpoint of the new size. Nodes sharing a PostgreSQL database
serialise these transactions with a transaction-scoped advisory lock taken first
(``pg_advisory_xact_lock``); SQLite's ``BEGIN IMMEDIATE`` is already the only writer. Chosen over
a periodic sequencing pass because every receipt must carry its inclusion proof in the answer
that delivers it: the proof exists when the receipt does, and a node that dies mid-append leaves
nothing (the transaction rolls back). Within a process, appends that arrive while one commits are
committed together next (group commit): one transaction, one fsync and one signature for the lot,
which is what lets one node keep up with a fleet (``make bench``, section tlog).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Protocol

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy.engine import Connection, Engine

from agent.evidence import merkle, note
from agent.evidence.receipt import receipt_key_id
from agent.evidence.tlogproof import MAX_LEAF_BYTES, log_verifier
from hq.db import tx
from hq.db.engine import WRITE_OPTION
from hq.db.schema import tlog_checkpoints, tlog_cosignatures, tlog_entries, tlog_nodes
from hq.index import SqlIndex

TLOG_LOCK_KEY = 0x62_6374_6C6F_67  # "bctlog": one sequencer across every node
TILE_WIDTH = 256
TILE_HEIGHT = 8


def default_origin(key: ed25519.Ed25519PublicKey) -> str:
    """The log's name when ``serve --log-origin`` gives none: stable for as long as the key is."""
    return f"bodycam-hq/{receipt_key_id(key)[:16]}"


class TlogStoreError(Exception):
    """The log's storage failed, or a request names what the log does not hold."""


@dataclass(frozen=True, slots=True)
class Leaf:
    kind: str  # "receipt" or "chain-head"
    device_id: str
    seq: int
    data: bytes


@dataclass(slots=True)
class _Pending:
    leaves: list[Leaf]
    now_ns: int
    done: threading.Event = field(default_factory=threading.Event)
    result: Appended | None = None
    error: BaseException | None = None


@dataclass(frozen=True, slots=True)
class Appended:
    first_index: int
    size: int  # the tree size after the append, which ``checkpoint`` is of
    checkpoint: str


class TransparencyLog(Protocol):
    """What the service asks of the log. Thread-safe; ``append`` is serialised across nodes."""

    origin: str

    def append(self, leaves: Sequence[Leaf], now_ns: int) -> Appended: ...
    def size(self) -> int: ...
    def checkpoint(self, size: int | None = None) -> str | None: ...
    def cosigned(self) -> str | None: ...
    def add_cosignatures(self, size: int, lines: dict[str, str], now_ns: int) -> None: ...
    def inclusion(self, index: int, size: int) -> list[bytes]: ...
    def consistency(self, size1: int, size2: int) -> list[bytes]: ...
    def tile(self, level: int, index: int, width: int) -> bytes: ...
    def entries(self, start: int, end: int) -> list[bytes]: ...
    def find(self, device_id: str, kind: str, seq: int, data: bytes | None = None) -> int | None: ...


def _coords(run: Callable[[merkle.NodeSource], object]) -> set[tuple[int, int]]:
    """The nodes ``run`` reads: proof and root code reads the same nodes whatever their hashes,
    so a dry run with a placeholder names them all, to fetch in one query."""
    wanted: set[tuple[int, int]] = set()

    def record(level: int, index: int) -> bytes:
        wanted.add((level, index))
        return bytes(merkle.HASH_LEN)

    run(record)
    return wanted


class SqlLog:
    """The log over one SQLAlchemy engine (SQLite or PostgreSQL); signs checkpoints with ``key``
    under the name ``origin``. Thread contract: thread-safe; each call is one transaction."""

    def __init__(self, engine: Engine, origin: str, key: ed25519.Ed25519PrivateKey | None) -> None:
        """``key`` None: a reader (exports, monitors) that cannot append."""
        self.engine = engine
        self.origin = note.check_name(origin)
        self._signer = None if key is None else note.Signer(origin, key)
        self.verifier = None if key is None else log_verifier(origin, key.public_key())
        self._writer = engine.execution_options(**{WRITE_OPTION: True})
        self._local = threading.Lock()  # one committing thread per process; the others batch behind it
        self._queue_guard = threading.Lock()
        self._queue: list[_Pending] = []

    def _conn(self, doing: str, write: bool = False) -> AbstractContextManager[Connection]:
        return tx.transaction(self._writer if write else self.engine, doing, write, TlogStoreError)

    # -- appending ----------------------------------------------------------------------------

    def append(self, leaves: Sequence[Leaf], now_ns: int) -> Appended:
        """Sequence ``leaves`` after every leaf already in the log and sign the new tree head.

        Group commit: appends that arrive while another thread of this process is committing
        wait for it, then the first of them commits all of theirs in one transaction (one
        fsync, one signature); each gets its own first index and the shared checkpoint."""
        mine = _Pending(list(leaves), now_ns)
        with self._queue_guard:
            self._queue.append(mine)
        with self._local:
            if not mine.done.is_set():
                with self._queue_guard:
                    batch, self._queue = self._queue, []
                self._commit(batch)
        mine.done.wait()
        if mine.error is not None:
            raise mine.error
        assert mine.result is not None
        return mine.result

    def _commit(self, batch: list[_Pending]) -> None:
        try:
            done = self._append_all([leaf for p in batch for leaf in p.leaves], max(p.now_ns for p in batch))
            first = done.first_index
            for p in batch:
                p.result = Appended(first, done.size, done.checkpoint)
                first += len(p.leaves)
        except BaseException as exc:  # every waiter of the batch learns why
            for p in batch:
                p.error = exc
        finally:
            for p in batch:
                p.done.set()

    def _append_all(self, leaves: Sequence[Leaf], now_ns: int) -> Appended:
        if not leaves:
            raise TlogStoreError("nothing to append")
        if self._signer is None:
            raise TlogStoreError("this log was opened to read: it has no key to sign with")
        signer = self._signer
        for leaf in leaves:
            if len(leaf.data) > MAX_LEAF_BYTES:
                raise TlogStoreError(f"a leaf of {len(leaf.data)} bytes: at most {MAX_LEAF_BYTES}")
        with self._conn("appending to the transparency log", write=True) as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(TLOG_LOCK_KEY)))
            first = self._size(conn)
            # The right edge of the tree (one perfect subtree per bit of the size): every left
            # sibling the new leaves hash with is one of these or one of the new nodes.
            edge = {(level, (first >> level) - 1) for level in range(first.bit_length()) if (first >> level) & 1}
            overlay = self._nodes(conn, edge)
            new_nodes: list[dict[str, object]] = []
            for offset, leaf in enumerate(leaves):
                index = first + offset
                h = merkle.leaf_hash(leaf.data)
                overlay[(0, index)] = h
                new_nodes.append({"level": 0, "idx": index, "hash": h})
                level, i = 0, index
                while i & 1:
                    h = merkle.node_hash(overlay[(level, i - 1)], h)
                    level, i = level + 1, i >> 1
                    overlay[(level, i)] = h
                    new_nodes.append({"level": level, "idx": i, "hash": h})
            size = first + len(leaves)
            conn.execute(tlog_entries.insert(), [
                {"idx": first + k, "kind": leaf.kind, "device_id": leaf.device_id, "seq": leaf.seq,
                 "data": leaf.data, "utc_ns": now_ns} for k, leaf in enumerate(leaves)])
            conn.execute(tlog_nodes.insert(), new_nodes)
            head = self._root(conn, size, overlay)
            signed = note.sign(note.Checkpoint(self.origin, size, head).text(), signer)
            conn.execute(tlog_checkpoints.insert().values(size=size, note=signed, utc_ns=now_ns))
        return Appended(first, size, signed)

    @staticmethod
    def _size(conn: Connection) -> int:
        top = conn.execute(sa.select(sa.func.max(tlog_entries.c.idx))).scalar()
        return 0 if top is None else int(top) + 1

    @staticmethod
    def _nodes(conn: Connection, wanted: set[tuple[int, int]],
               overlay: dict[tuple[int, int], bytes] | None = None) -> dict[tuple[int, int], bytes]:
        found = {k: v for k, v in (overlay or {}).items() if k in wanted}
        missing = wanted - found.keys()
        if missing:
            cond = sa.tuple_(tlog_nodes.c.level, tlog_nodes.c.idx).in_(sorted(missing))
            for r in conn.execute(sa.select(tlog_nodes.c.level, tlog_nodes.c.idx, tlog_nodes.c.hash).where(cond)):
                found[(int(r.level), int(r.idx))] = bytes(r.hash)
        if len(found) != len(wanted):
            raise TlogStoreError(f"the log lacks node(s) {sorted(wanted - found.keys())[:4]}: it is damaged")
        return found

    def _compute(self, conn: Connection, run: Callable[[merkle.NodeSource], object],
                 overlay: dict[tuple[int, int], bytes] | None = None) -> object:
        got = self._nodes(conn, _coords(run), overlay)
        return run(lambda level, index: got[(level, index)])

    def _root(self, conn: Connection, size: int, overlay: dict[tuple[int, int], bytes] | None = None) -> bytes:
        head = self._compute(conn, lambda node: merkle.root(node, size), overlay)
        assert isinstance(head, bytes)
        return head

    # -- reading ------------------------------------------------------------------------------

    def size(self) -> int:
        with self._conn("reading the log's size") as conn:
            return self._size(conn)

    def checkpoint(self, size: int | None = None) -> str | None:
        """The signed checkpoint of ``size`` (default: the newest), with the cosignatures kept for it."""
        with self._conn("reading a checkpoint") as conn:
            q = sa.select(tlog_checkpoints.c.size, tlog_checkpoints.c.note)
            q = q.where(tlog_checkpoints.c.size == size) if size is not None else q
            row = conn.execute(q.order_by(tlog_checkpoints.c.size.desc()).limit(1)).first()
            if row is None:
                return None
            lines = conn.execute(sa.select(tlog_cosignatures.c.line).where(tlog_cosignatures.c.size == row.size)
                                 .order_by(tlog_cosignatures.c.witness)).scalars().all()
        return note.add_signatures(str(row.note), "".join(lines)) if lines else str(row.note)

    def cosigned(self) -> str | None:
        """The newest checkpoint that carries at least one witness cosignature."""
        with self._conn("reading the newest cosigned checkpoint") as conn:
            size = conn.execute(sa.select(sa.func.max(tlog_cosignatures.c.size))).scalar()
        return None if size is None else self.checkpoint(int(size))

    def add_cosignatures(self, size: int, lines: dict[str, str], now_ns: int) -> None:
        """Keep each witness's cosignature line of the checkpoint of ``size`` (once per witness)."""
        if not lines:
            return
        with self._conn("keeping cosignatures", write=True) as conn:
            have = set(conn.execute(sa.select(tlog_cosignatures.c.witness)
                                    .where(tlog_cosignatures.c.size == size)).scalars())
            rows = [{"size": size, "witness": w, "line": line, "utc_ns": now_ns}
                    for w, line in sorted(lines.items()) if w not in have]
            if rows:
                conn.execute(tlog_cosignatures.insert(), rows)

    def _proof(self, doing: str, run: Callable[[merkle.NodeSource], object]) -> list[bytes]:
        with self._conn(doing) as conn:
            try:
                proof = self._compute(conn, run)
            except merkle.MerkleError as exc:
                raise TlogStoreError(f"{doing}: {exc}") from exc
        assert isinstance(proof, list)
        return proof

    def inclusion(self, index: int, size: int) -> list[bytes]:
        return self._proof(f"proving leaf {index} in size {size}",
                           lambda node: merkle.inclusion_proof(node, index, size))

    def consistency(self, size1: int, size2: int) -> list[bytes]:
        return self._proof(f"proving size {size1} consistent with {size2}",
                           lambda node: merkle.consistency_proof(node, size1, size2))

    def tile(self, level: int, index: int, width: int) -> bytes:
        """The hashes of tile ``level``/``index`` (c2sp.org/tlog-tiles): ``width`` nodes at tree
        height ``8 * level``; raises when the log does not hold them all."""
        height, start = TILE_HEIGHT * level, index * TILE_WIDTH
        with self._conn("reading a tile") as conn:
            rows = conn.execute(sa.select(tlog_nodes.c.hash).where(
                tlog_nodes.c.level == height, tlog_nodes.c.idx >= start, tlog_nodes.c.idx < start + width)
                .order_by(tlog_nodes.c.idx)).scalars().all()
        if len(rows) != width:
            raise TlogStoreError(f"tile {level}/{index} of width {width} is not complete")
        return b"".join(bytes(r) for r in rows)

    def entries(self, start: int, end: int) -> list[bytes]:
        with self._conn("reading entries") as conn:
            rows = conn.execute(sa.select(tlog_entries.c.data).where(
                tlog_entries.c.idx >= start, tlog_entries.c.idx < end).order_by(tlog_entries.c.idx)).scalars().all()
        if len(rows) != end - start:
            raise TlogStoreError(f"entries {start}..{end} are not all held")
        return [bytes(r) for r in rows]

    def find(self, device_id: str, kind: str, seq: int, data: bytes | None = None) -> int | None:
        """The index of the newest leaf of that kind for that entry (a receipt issued again is
        logged again), or of exactly ``data`` when given; None if there is none."""
        cond = [tlog_entries.c.device_id == device_id, tlog_entries.c.kind == kind, tlog_entries.c.seq == seq]
        if data is not None:
            cond.append(tlog_entries.c.data == data)
        with self._conn("finding a leaf") as conn:
            top = conn.execute(sa.select(sa.func.max(tlog_entries.c.idx)).where(*cond)).scalar()
        return None if top is None else int(top)


def log_reader(index: SqlIndex) -> SqlLog | None:
    """The log in ``index``'s database, to read (exports): None while it holds no checkpoint."""
    with index.engine.connect() as conn:
        row = conn.execute(sa.select(tlog_checkpoints.c.note).order_by(tlog_checkpoints.c.size.desc())
                           .limit(1)).first()
    if row is None:
        return None
    return SqlLog(index.engine, note.parse_checkpoint(note.split(str(row.note))[0]).origin, None)
