"""The operations room's state on both engines: alerts raised once by racing nodes, acknowledged
once by racing operators; live updates across nodes through PostgreSQL's LISTEN/NOTIFY."""

from __future__ import annotations

import asyncio
import time

from hq.alert_store import SqlAlertStore
from hq.alerts import Kind
from hq.db import migrate as migrations
from hq.db.engine import make_engine, parse_url
from hq.events import PgBus, bus_for
from hq.index import SqlIndex
from tests.integration.index_util import run_together

T0_NS = 1_790_000_000_000_000_000


def open_index(db_url: str) -> SqlIndex:
    engine = make_engine(parse_url(db_url), 10.0)
    migrations.upgrade(engine)
    return SqlIndex(engine)


def test_racing_nodes_raise_one_alert_and_one_operator_acknowledges_it(db_url: str) -> None:
    index = open_index(db_url)
    try:
        index.enroll("unit-1", "pem", "ab" * 32, T0_NS)
        stores = [SqlAlertStore(index.engine) for _ in range(4)]
        raised: list[object] = []
        run_together(lambda n: raised.append(stores[n].raise_alert("unit-1", Kind.NO_CONTACT, {"n": n}, T0_NS)), 4)
        winners = [a for a in raised if a is not None]
        assert len(winners) == 1 and len(stores[0].standing()) == 1
        alert_id = stores[0].standing()[0].id
        acked: list[object] = []
        run_together(lambda n: acked.append(stores[n].acknowledge(alert_id, f"op{n}", T0_NS + n)), 4)
        assert len([a for a in acked if a is not None]) == 1
        # A condition stays standing after acknowledgement; cleared, a new one may be raised.
        assert stores[0].clear(alert_id, T0_NS + 10) is not None and stores[0].clear(alert_id, T0_NS + 11) is None
        assert stores[1].raise_alert("unit-1", Kind.NO_CONTACT, {}, T0_NS + 20) is not None
        assert [a.cleared_utc_ns is None for a in stores[0].recent(10)] == [True, False]
    finally:
        index.close()


def test_an_event_published_on_one_node_reaches_the_subscribers_of_another(fresh_postgres_url: str) -> None:
    url = parse_url(fresh_postgres_url)
    node_a, node_b = bus_for(url), bus_for(url)
    assert isinstance(node_a, PgBus) and isinstance(node_b, PgBus)
    try:
        assert node_a.wait_listening(30) and node_b.wait_listening(30)

        async def run() -> list[dict[str, object]]:
            sub = node_b.subscribe(asyncio.get_running_loop(), max_queue=16)
            started = time.monotonic()
            node_a.publish({"type": "unit", "unit": {"device_id": "unit-1", "lat_deg": 1.5}})
            got: list[dict[str, object]] = []
            while not got and time.monotonic() - started < 20:
                got += await sub.get(1.0)
            node_b.unsubscribe(sub)
            return got

        assert asyncio.run(run()) == [{"type": "unit", "unit": {"device_id": "unit-1", "lat_deg": 1.5}}]
    finally:
        node_a.close()
        node_b.close()
