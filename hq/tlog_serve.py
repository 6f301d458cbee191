"""The transparency log as static resources (c2sp.org/tlog-tiles) under ``/tlog/``: the signed
checkpoint, Merkle tiles and entry bundles, so standard tooling can mirror and audit the log.

``TileServer.get`` maps a path to a ``Response``; the ASGI layer only routes ``GET``/``HEAD`` of
``/tlog/...`` here. Tiles and bundles are immutable (cached for a year); the checkpoint changes
with every append (cached for a second). Only resources the newest checkpoint implies are served:
a partial tile of a width the tree never had is ``404``.
"""

from __future__ import annotations

import re

from agent.evidence.note import parse_checkpoint, split
from hq.service import Response
from hq.tlog import TILE_WIDTH, TlogStoreError, TransparencyLog

PREFIX = "/tlog/"
_TILE = re.compile(r"^tile/(?:(entries)|([0-9]|[1-5][0-9]|6[0-3]))/"
                   r"((?:x[0-9]{3}/)*[0-9]{3})(?:\.p/([1-9][0-9]{0,2}))?$")
IMMUTABLE = "public, max-age=31536000, immutable"
MAX_TILE_INDEX = 2**40


def tile_index(path: str) -> int:
    """``x001/x234/067`` -> 1234067."""
    return int("".join(part.lstrip("x") for part in path.split("/")))


def tile_path(index: int) -> str:
    """1234067 -> ``x001/x234/067`` (c2sp.org/tlog-tiles)."""
    digits = f"{index:03d}"
    digits = "0" * (-len(digits) % 3) + digits
    parts = [digits[i:i + 3] for i in range(0, len(digits), 3)]
    return "/".join([*("x" + p for p in parts[:-1]), parts[-1]])


def _text(status: int, message: str) -> Response:
    return Response(status, {"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store"},
                    (message + "\n").encode())


def bundle(entries: list[bytes]) -> bytes:
    """An entry bundle: each entry prefixed with its length as a big-endian uint16."""
    return b"".join(len(e).to_bytes(2, "big") + e for e in entries)


class TileServer:
    """Answers ``GET /tlog/...`` from a ``TransparencyLog``. Thread-safe (the log is)."""

    def __init__(self, log: TransparencyLog) -> None:
        self._log = log

    def get(self, path: str) -> Response:
        if not path.startswith(PREFIX):
            return _text(404, "not a transparency log resource")
        rest = path[len(PREFIX):]
        try:
            if rest == "checkpoint":
                signed = self._log.checkpoint()
                if signed is None:
                    return _text(404, "the log is empty: no checkpoint yet")
                return Response(200, {"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "max-age=1"},
                                signed.encode("utf-8"))
            m = _TILE.match(rest)
            if m is None:
                return _text(404, "no such resource: /tlog/checkpoint, /tlog/tile/L/N[.p/W] or /tlog/tile/entries/N")
            return self._tile(m.group(1) is not None, int(m.group(2) or 0), tile_index(m.group(3)), m.group(4))
        except TlogStoreError as exc:
            return _text(404, str(exc))

    def _tile(self, entries: bool, level: int, index: int, partial: str | None) -> Response:
        signed = self._log.checkpoint()
        size = 0 if signed is None else parse_checkpoint(split(signed)[0]).size
        width = int(partial) if partial else TILE_WIDTH
        if width > TILE_WIDTH or index > MAX_TILE_INDEX:
            return _text(404, "no such tile")
        # How many hashes the tree holds at this tile's height: a tile (or a partial one, for a
        # size some checkpoint had) exists when all of its hashes do.
        held = size // (TILE_WIDTH ** level)
        if index * TILE_WIDTH + width > held or (partial is not None and width == TILE_WIDTH):
            return _text(404, "the tree has no such tile")
        if entries:
            start = index * TILE_WIDTH
            body = bundle(self._log.entries(start, start + width))
        else:
            body = self._log.tile(level, index, width)
        return Response(200, {"Content-Type": "application/octet-stream", "Cache-Control": IMMUTABLE}, body)
