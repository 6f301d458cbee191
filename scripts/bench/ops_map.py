"""ops_map section: the operations room's map with 1,000 units, in Debian's chromium.

A real ``bodycam-hq serve`` (embedded index, TLS on loopback), an operator made with the real CLI,
1,000 simulated units enrolled and heartbeating once each with a position (the real signed
protocol, tests/fleet_util.py), then the map opened in headless chromium (tests/browser_util.py):

- time to first render: from the map page's navigation start to every unit drawn (the snapshot
  fetched, 1,000 markers placed and clustered), median of a few loads;
- heartbeat-to-marker latency: a unit's heartbeat with a new position sent, until the page's
  marker stands at it (through the service, the alert decision, the live-update bus and the
  server-sent event stream); p50 and p99 of ``SAMPLES`` heartbeats.

Figures only; nothing is asserted (timings depend on the machine and whatever else runs on it).
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from agent.sync.heartbeat import heartbeat_body
from hq.app import open_index
from tests.browser_util import Browser, OpsServer, sign_in
from tests.fleet_util import SimUnit, heartbeat_storm, sim_units

from .common import Result

log = logging.getLogger("bench.ops_map")

UNITS = 1000
LOADS = 3
SAMPLES = 30
GOAL_FIRST_RENDER_S = 3.0
GOAL_MARKER_LATENCY_S = 1.0


def _position(i: int, step: int = 0) -> tuple[float, float]:
    """Units spread over a city-sized box around London, each step a few tens of metres on."""
    return 51.40 + (i % 40) * 0.006 + step * 0.0003, -0.30 + (i // 40) * 0.012


def _status(unit: SimUnit, i: int, step: int = 0) -> dict[str, Any]:
    lat, lon = _position(i, step)
    return {"device_id": unit.device_id, "utc_ns": time.time_ns(), "recording": {"state": "ready"},
            "storage": {"level": "ok"}, "time": {"source": "ntp", "synced": True},
            "gnss": {"mode": 3, "lat_deg": lat, "lon_deg": lon}}


def _pct(values: list[float], q: float) -> float | None:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3) if ordered else None


def run(quick: bool) -> Result:
    count = 200 if quick else UNITS
    samples = 10 if quick else SAMPLES
    with tempfile.TemporaryDirectory(prefix="bodycam-bench-ops-") as tmp:
        server = OpsServer.start(Path(tmp) / "H", users={"olivia": ("operator",)},
                                 extra_args=["--max-connections-per-source", "2048"])
        browser = None
        try:
            units = sim_units(count, prefix="map")
            with open_index(server.data) as index:
                for unit in units:
                    index.enroll(unit.device_id, unit.keystore.public_pem(), unit.device_id, time.time_ns())
            for i, unit in enumerate(units):
                unit.position = _position(i)
            storm = heartbeat_storm(units, server.url, server.data / "keys" / "ca.pem", rounds=1, interval_s=5.0)
            log.info("%d units heartbeated (%d answered)", count, len(storm.ok))
            browser = Browser()
            page = browser.new_page()
            sign_in(page, server, "olivia")
            loads = []
            for _ in range(LOADS):
                page.goto(server.url + "/ops/map")
                page.wait_for_function("() => window.bodycamMap && window.bodycamMap.loadedAt !== null",
                                       timeout=120_000)
                loads.append(page.evaluate("window.bodycamMap.loadedAt") / 1000)
            page.get_by_text("Live: updates arrive").wait_for()
            latencies = []
            client_unit = units[0]
            client = client_unit.client(server.url, server.data / "keys" / "ca.pem")
            for step in range(1, samples + 1):
                lat, _lon = _position(0, step)
                body = heartbeat_body(_status(client_unit, 0, step), client_unit.keystore)
                time.sleep(5.2)  # one heartbeat per 5 s per unit: the service's own rate limit
                sent_ms = time.time() * 1000
                client.heartbeat(body)
                page.wait_for_function("([id, lat]) => { const p = window.bodycamMap.position(id);"
                                       " return p && Math.abs(p[0] - lat) < 1e-9; }",
                                       arg=[client_unit.device_id, lat], timeout=30_000)
                drawn_ms = page.evaluate("window.bodycamMap.lastUpdate.wall")
                latencies.append((drawn_ms - sent_ms) / 1000)
        finally:
            if browser is not None:
                browser.close()
            server.stop()
    first = statistics.median(loads)
    return {
        "units": count,
        "heartbeats_answered": len(storm.ok),
        "first_render_s": {"median": round(first, 3), "loads": [round(x, 3) for x in loads],
                           "goal": GOAL_FIRST_RENDER_S},
        "heartbeat_to_marker_s": {"p50": _pct(latencies, 0.5), "p99": _pct(latencies, 0.99),
                                  "samples": len(latencies), "goal_p50": GOAL_MARKER_LATENCY_S},
        "what": "first render: navigation start to every unit placed; latency: heartbeat sent to marker moved",
    }
