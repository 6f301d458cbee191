"""The log as c2sp.org/tlog-tiles: paths, full and partial tiles, entry bundles, refusals."""

from __future__ import annotations

import hashlib
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.evidence import merkle
from hq.index import SqliteIndex
from hq.tlog import Leaf, SqlLog
from hq.tlog_serve import TileServer, tile_index, tile_path

KEY = ed25519.Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"tile test").digest())


def test_tile_paths_are_the_specs() -> None:
    assert tile_path(1234067) == "x001/x234/067"
    assert tile_path(5) == "005" and tile_path(1000) == "x001/000"
    assert tile_index("x001/x234/067") == 1234067


def test_tiles_and_bundles_of_a_log_of_300_leaves(tmp_path: Path) -> None:
    index = SqliteIndex(tmp_path / "i.sqlite")
    try:
        log = SqlLog(index.engine, "hq.test/log", KEY)
        tiles = TileServer(log)
        assert tiles.get("/tlog/checkpoint").status == 404  # empty: no checkpoint yet
        data = [b"entry %d" % i for i in range(300)]
        log.append([Leaf("receipt", "u", i, d) for i, d in enumerate(data)], now_ns=1)
        ref = merkle.MemoryTree(data)
        cp = tiles.get("/tlog/checkpoint")
        assert cp.status == 200 and cp.body.decode().splitlines()[1] == "300"
        full = tiles.get("/tlog/tile/0/000")
        assert full.status == 200 and "immutable" in full.headers["Cache-Control"]
        assert full.body == b"".join(ref.node(0, i) for i in range(256))
        assert tiles.get("/tlog/tile/0/001.p/44").body == b"".join(ref.node(0, i) for i in range(256, 300))
        assert tiles.get("/tlog/tile/1/000.p/1").body == ref.node(8, 0)
        bundle = tiles.get("/tlog/tile/entries/001.p/44").body
        assert bundle == b"".join(len(d).to_bytes(2, "big") + d for d in data[256:])
        for missing in ("/tlog/tile/0/001", "/tlog/tile/0/001.p/45", "/tlog/tile/0/000.p/256", "/tlog/tile/2/000.p/1",
                        "/tlog/tile/0/0", "/tlog/tile/64/000", "/tlog/tile/entries/002.p/1", "/tlog/../index.sqlite"):
            assert tiles.get(missing).status == 404, missing
    finally:
        index.close()
