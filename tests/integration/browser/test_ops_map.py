"""The map, the units and their alerts in a real browser, against a real headquarters and
simulated units heartbeating over the real protocol: positions drawn on headquarters' own tiles
(no request leaves 127.0.0.1), a marker that moves when a heartbeat arrives, an alert when a unit
stops, acknowledged by an operator, audited; an auditor sees no position."""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from agent.sync.heartbeat import heartbeat_body
from hq.app import open_index
from tests.browser_util import OpsServer, assert_accessible, screenshot, sign_in
from tests.fleet_util import SimUnit

NO_CONTACT_S = 15
POSITIONS = {"map-1": (51.5007, -0.1246), "map-2": (48.8584, 2.2945), "map-3": (40.6892, -74.0445)}


class Fleet:
    def __init__(self, server: OpsServer) -> None:
        self.server = server
        self.units = {name: SimUnit(name) for name in POSITIONS}
        with open_index(server.data) as index:
            for unit in self.units.values():
                index.enroll(unit.device_id, unit.keystore.public_pem(), unit.device_id + "-fp", time.time_ns())
        self.clients = {name: u.client(server.url, server.data / "keys" / "ca.pem") for name, u in self.units.items()}

    def beat(self, name: str, lat: float, lon: float, **extra: Any) -> None:
        status: dict[str, Any] = {
            "device_id": name, "utc_ns": time.time_ns(),
            "recording": {"state": "recording" if name == "map-2" else "ready"},
            "storage": {"level": "ok", "free_bytes": 30_000_000_000},
            "battery": {"battery_pct": 76.5, "charging": False},
            "time": {"source": "gnss", "synced": True},
            "gnss": {"mode": 3, "lat_deg": lat, "lon_deg": lon, "h_acc_m": 4.0},
            "firmware": "0.1.0", "config_sha256": "ab" * 32,
            "sensors": {"chest": {"state": "running", "last_error": None}},
            "chain_head": {"seq": 4, "hash": "cd" * 32},
            "sync": {"backlog_entries": 1, "backlog_bytes": 2_000_000, "last_receipt_seq": 3},
        }
        status.update(extra)
        reply = self.clients[name].heartbeat(heartbeat_body(status, self.units[name].keystore))
        assert reply["ok"] is True

    def beat_all(self) -> None:
        for name, (lat, lon) in POSITIONS.items():
            self.beat(name, lat, lon)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    server = OpsServer.start(tmp_path_factory.mktemp("opsmap"),
                             extra_args=["--no-contact-s", str(NO_CONTACT_S), "--alert-sweep-s", "0.5"])
    try:
        fleet = Fleet(server)
        yield fleet
    finally:
        server.stop()


def outside_requests(page: Any) -> list[str]:
    seen: list[str] = []
    page.on("request", lambda req: seen.append(req.url))
    return seen


def leaving_loopback(urls: list[str]) -> list[str]:
    return [u for u in urls if urllib.parse.urlsplit(u).hostname not in ("127.0.0.1", None)
            and not u.startswith(("data:", "blob:", "about:"))]


def test_the_map_shows_units_where_they_are_and_moves_a_marker_live(fleet: Fleet, page: Any) -> None:
    requests = outside_requests(page)
    sign_in(page, fleet.server, "olivia")
    fleet.beat_all()
    page.goto(fleet.server.url + "/ops/map")
    page.wait_for_function("() => window.bodycamMap && window.bodycamMap.loadedAt !== null")
    for name, (lat, lon) in POSITIONS.items():
        assert page.evaluate("id => window.bodycamMap.position(id)", name) == pytest.approx([lat, lon])
    assert page.evaluate("id => window.bodycamMap.state(id)", "map-2") == "recording"
    assert page.evaluate("id => window.bodycamMap.state(id)", "map-1") == "ready"
    page.get_by_text("Live: updates arrive").wait_for()
    screenshot(page, "ops-map")

    fleet.beat("map-1", 51.5033, -0.1196)  # walked along the river
    page.wait_for_function("id => { const p = window.bodycamMap.position(id); return p && p[0] > 51.502; }",
                           arg="map-1")
    assert page.evaluate("id => window.bodycamMap.position(id)", "map-1") == pytest.approx([51.5033, -0.1196])
    assert page.locator('#unit-table tr[data-unit="map-1"]').get_attribute("data-lat") == "51.5033"

    tiles = [u for u in requests if "/ops/tiles/" in u]
    assert tiles, "the map drew no tile from headquarters"
    assert leaving_loopback(requests) == []
    assert page.locator(".leaflet-control-attribution").inner_text().strip().endswith("OpenStreetMap contributors")
    assert_accessible(page)
    views = [r for r in fleet.server.audit("view-unit-position") if r["actor"] == "olivia"]
    assert any(v["detail"]["context"] == "map" and set(v["detail"]["units"]) == set(POSITIONS) for v in views)


def test_a_unit_page_shows_its_heartbeat_and_the_view_is_audited(fleet: Fleet, page: Any) -> None:
    fleet.beat_all()
    sign_in(page, fleet.server, "olivia", "/ops/units")
    page.goto(fleet.server.url + "/ops/units")
    assert page.locator('#units tr[data-unit="map-2"]').get_attribute("data-state") == "recording"
    assert_accessible(page)
    page.get_by_role("link", name="map-3").click()
    page.get_by_role("heading", name="Unit map-3").wait_for()
    text = page.locator("main").inner_text()
    for fact in ("0.1.0", "abababababababab", "seq 4", "1 entries", "chest: running", "gnss, synchronised",
                 "40.68920, -74.04450"):
        assert fact in text, fact
    page.locator("#unit-map .leaflet-tile-loaded").first.wait_for()
    screenshot(page, "ops-unit")
    assert_accessible(page)
    views = [r for r in fleet.server.audit("view-unit-position") if r["actor"] == "olivia"]
    assert views[-1]["target"] == "device:map-3" and views[-1]["detail"]["context"] == "unit"


def test_an_alert_appears_when_a_unit_stops_and_an_operator_acknowledges_it(fleet: Fleet, page: Any) -> None:
    sign_in(page, fleet.server, "olivia", "/ops/alerts")
    page.goto(fleet.server.url + "/ops/alerts")
    # map-3 stopped reporting after the earlier tests: the sweeper raises no-contact, the page's
    # live stream sees it and the page reloads with the alert.
    row = page.locator('tr[data-unit="map-3"][data-kind="no-contact"]')
    row.first.wait_for(timeout=(NO_CONTACT_S + 45) * 1000)
    screenshot(page, "ops-alert-raised")
    assert_accessible(page)
    row.first.get_by_role("button", name="Acknowledge No contact on map-3").click()
    page.get_by_role("status").filter(has_text="acknowledged").wait_for()
    status = page.locator('tr[data-unit="map-3"][data-kind="no-contact"] td.alert-status').first.inner_text()
    assert "acknowledged by olivia" in status
    acks = [r for r in fleet.server.audit("alert-acknowledge") if r["actor"] == "olivia"]
    assert acks and acks[-1]["target"] == "device:map-3" and acks[-1]["outcome"] == "ok"
    assert acks[-1]["detail"]["kind"] == "no-contact" and acks[-1]["component"] == "hq-web"


def test_an_auditor_sees_no_position(fleet: Fleet, page: Any) -> None:
    fleet.server.audit()  # the log exists
    sign_in(page, fleet.server, "ada")
    assert page.get_by_role("link", name="Map").count() == 0
    for path in ("/ops/map", "/ops/units", "/ops/units/map-1"):
        response = page.goto(fleet.server.url + path)
        assert response is not None and response.status == 403, path
    api = page.request.get(fleet.server.url + "/ops/api/units", headers={"Accept": "application/json"})
    assert api.status == 403 and "lat_deg" not in api.text()
    stream = page.request.get(fleet.server.url + "/ops/events", headers={"Accept": "application/json"})
    assert stream.status == 403
    assert not [r for r in fleet.server.audit("view-unit-position") if r["actor"] == "ada"]
    denied = [r for r in fleet.server.audit("access-denied") if r["actor"] == "ada"]
    assert {r["target"] for r in denied} >= {"path:/ops/map", "path:/ops/api/units", "path:/ops/events"}


def test_the_live_stream_ends_when_its_session_is_signed_out_elsewhere(fleet: Fleet, page: Any,
                                                                        browser: Any) -> None:
    sign_in(page, fleet.server, "olivia", "/ops/map")
    page.goto(fleet.server.url + "/ops/map")
    page.get_by_text("Live: updates arrive").wait_for()
    other = browser.new_page()  # the same browser profile: the same session cookie
    try:
        other.goto(fleet.server.url + "/ops/")
        other.get_by_role("button", name="Sign out").click()
        other.get_by_role("heading", name="Sign in").wait_for()
    finally:
        other.close()
    # The map's stream notices within seconds, without any user action, and the page goes to sign-in.
    page.get_by_role("heading", name="Sign in").wait_for(timeout=20_000)
