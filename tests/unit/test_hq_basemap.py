"""The offline basemap: the shipped OpenStreetMap world raster and a regional MBTiles file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from hq.basemap import BasemapError, MbtilesSource, default_basemap

PNG = b"\x89PNG\r\n\x1a\n"


def make_mbtiles(path: Path, fmt: str = "png", attribution: str | None = "© City survey") -> Path:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE metadata (name TEXT, value TEXT)")
    conn.execute("CREATE TABLE tiles (zoom_level INTEGER, tile_column INTEGER, tile_row INTEGER, tile_data BLOB)")
    meta = [("name", "city"), ("format", fmt)] + ([("attribution", attribution)] if attribution else [])
    conn.executemany("INSERT INTO metadata VALUES (?, ?)", meta)
    # zoom 12, column 2048, TMS row 2047 (XYZ row 2048): one tile just south-east of 0/0.
    conn.execute("INSERT INTO tiles VALUES (12, 2048, 2047, ?)", (PNG + b"city",))
    conn.execute("INSERT INTO tiles VALUES (14, 8192, 8191, ?)", (PNG + b"deep",))
    conn.commit()
    conn.close()
    return path


def test_the_shipped_world_raster_is_osm_zoom_0_to_6_with_its_attribution() -> None:
    world = MbtilesSource(default_basemap())
    assert (world.info.min_zoom, world.info.max_zoom) == (0, 6)
    assert "OpenStreetMap contributors" in world.info.attribution
    assert world.info.content_type == "image/png"
    tile = world.tile(0, 0, 0)
    assert tile is not None and tile.startswith(PNG)
    assert world.tile(7, 0, 0) is None and world.tile(1, 2, 0) is None and world.tile(-1, 0, 0) is None


def test_rows_are_asked_in_xyz_and_read_in_tms(tmp_path: Path) -> None:
    city = MbtilesSource(make_mbtiles(tmp_path / "city.mbtiles"))
    assert city.tile(12, 2048, 2048) == PNG + b"city"
    assert city.tile(12, 2048, 2047) is None
    assert (city.info.min_zoom, city.info.max_zoom, city.info.attribution) == (12, 14, "© City survey")
    world = MbtilesSource(default_basemap())
    raw = sqlite3.connect(default_basemap())
    (north_west,) = raw.execute("SELECT tile_data FROM tiles WHERE zoom_level = 1 AND tile_column = 0 "
                                "AND tile_row = 1").fetchone()
    raw.close()
    assert world.tile(1, 0, 0) == north_west


def test_a_file_without_attribution_gets_osm_s_and_unusable_files_are_refused(tmp_path: Path) -> None:
    assert "OpenStreetMap" in MbtilesSource(make_mbtiles(tmp_path / "a.mbtiles", attribution=None)).info.attribution
    with pytest.raises(BasemapError, match="no such file"):
        MbtilesSource(tmp_path / "missing.mbtiles")
    with pytest.raises(BasemapError, match="'pbf'.*raster"):
        MbtilesSource(make_mbtiles(tmp_path / "v.mbtiles", fmt="pbf"))
    (tmp_path / "junk.mbtiles").write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(BasemapError, match="not an MBTiles file"):
        MbtilesSource(tmp_path / "junk.mbtiles")
