"""The operations room's service over a real SQLite index: alerts raised from heartbeats and
sweeps, acknowledged (audited), positions audited, live updates published."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.evidence.httpsig import sign_request
from agent.evidence.receipt import make_heartbeat
from hq.alert_store import SqlAlertStore
from hq.alerts import AlertPolicy, Kind
from hq.errors import ApiError
from hq.events import LocalBus
from hq.index import SqliteIndex
from hq.ops import OpsError, OpsService
from hq.records import Quarantined
from hq.service import HqService
from hq.storage import FileEvidenceStore, UploadArea
from tests.evidence_util import MemorySigner
from tests.unit.test_hq_tus import T0_NS, FakeClock, enroll

S = 1_000_000_000


@dataclass
class Room:
    index: SqliteIndex
    service: HqService
    ops: OpsService
    clock: FakeClock
    bus: LocalBus
    units: dict[str, MemorySigner]

    def beat(self, device_id: str, **status: Any) -> None:
        doc = {"utc_ns": self.clock.ns, "recording": {"state": "ready"}, "storage": {"level": "ok"},
               "time": {"source": "ntp", "synced": True}, "gnss": {"mode": 3, "lat_deg": "48.85", "lon_deg": "2.35"}}
        doc.update(status)
        r = self.service.heartbeat(device_id, make_heartbeat(doc, self.units[device_id]))
        assert r.status == 200


@pytest.fixture
def room(tmp_path: Path) -> Iterator[Room]:
    index = SqliteIndex(tmp_path / "index.sqlite")
    clock = FakeClock()
    service = HqService(index, FileEvidenceStore(tmp_path), UploadArea(tmp_path), ed25519.Ed25519PrivateKey.generate(),
                        clock)
    bus = LocalBus()
    ops = OpsService(index, SqlAlertStore(index.engine), bus, clock, AlertPolicy(no_contact_s=300))
    ops.attach(service)
    units = {}
    for name in ("unit-1", "unit-2"):
        units[name] = MemorySigner()
        enroll(index, units[name], name)
    yield Room(index, service, ops, clock, bus, units)
    service.close()
    index.close()


def kinds(room: Room, device_id: str | None = None) -> set[str]:
    return {a.kind for a in room.ops.alerts.standing(device_id)}


def test_a_heartbeat_raises_and_a_later_one_clears_its_conditions(room: Room) -> None:
    room.beat("unit-1", storage={"level": "critical"}, sensors={"cam": {"state": "failed", "last_error": "EIO"}})
    assert kinds(room, "unit-1") == {Kind.STORAGE_CRITICAL, Kind.SENSOR_FAULT}
    room.clock.ns += 10 * S
    room.beat("unit-1", sensors={"cam": {"state": "running"}})
    assert kinds(room, "unit-1") == set()
    history = room.ops.alert_list(device_id="unit-1")
    assert len(history) == 2 and all(a.cleared_utc_ns == T0_NS + 10 * S for a in history)


def test_the_sweep_raises_no_contact_and_a_heartbeat_clears_it(room: Room) -> None:
    room.beat("unit-1")
    room.clock.ns += 299 * S
    room.beat("unit-2")
    assert room.ops.sweep() == 0
    room.clock.ns += 2 * S
    assert room.ops.sweep() == 1 and kinds(room) == {Kind.NO_CONTACT}
    assert room.ops.sweep() == 0  # raised once, not again
    [unit] = [u for u in room.ops.units("op", positions=False, context="test") if u["device_id"] == "unit-1"]
    assert unit["state"] == "offline"
    room.beat("unit-1")
    assert kinds(room) == set()


def test_two_sweepers_raise_one_alert(tmp_path: Path, room: Room) -> None:
    other = OpsService(room.index, SqlAlertStore(room.index.engine), LocalBus(), room.clock, room.ops.policy)
    room.clock.ns += 400 * S
    room.ops.sweep()
    other.sweep()
    assert sorted(a.device_id for a in room.ops.alerts.standing()) == ["unit-1", "unit-2"]


def test_a_quarantined_upload_raises_once_and_is_cleared_by_acknowledgement(room: Room) -> None:
    room.beat("unit-1")
    room.index.add_quarantine(Quarantined("q1", "unit-1", 3, "up1", "ab" * 32, "conflict", "forked", "loc",
                                          room.clock.ns))
    room.ops.sweep()
    [alert] = room.ops.alerts.standing("unit-1")
    assert alert.kind == Kind.QUARANTINED_UPLOAD
    room.clock.ns += S
    done = room.ops.acknowledge("alice", alert.id)
    assert done.acknowledged_by == "alice" and done.cleared_utc_ns == room.clock.ns
    room.ops.sweep()
    assert kinds(room) == set()  # the same quarantine does not raise again
    [rec] = room.index.audit_log("alert-acknowledge")
    assert (rec.actor, rec.target, rec.outcome, rec.detail["kind"]) == (
        "alice", "device:unit-1", "ok", "quarantined-upload")
    with pytest.raises(OpsError, match="already acknowledged by alice"):
        room.ops.acknowledge("bob", alert.id)
    assert room.index.audit_log("alert-acknowledge")[-1].outcome == "refused"


def test_an_acknowledged_condition_stays_standing_until_it_ends(room: Room) -> None:
    room.beat("unit-1", storage={"level": "full"})
    [alert] = room.ops.alerts.standing("unit-1")
    summary = {u["device_id"]: u for u in room.ops.units("op", positions=False, context="t")}
    assert summary["unit-1"]["state"] == "alarm"
    room.ops.acknowledge("alice", alert.id)
    [still] = room.ops.alerts.standing("unit-1")
    assert still.acknowledged and still.cleared_utc_ns is None
    summary = {u["device_id"]: u for u in room.ops.units("op", positions=False, context="t")}
    assert summary["unit-1"]["state"] == "ready"


def test_a_request_signed_with_a_revoked_key_raises_revoked_key_but_a_claimed_id_does_not(room: Room) -> None:
    url = "https://hq.test/v1/heartbeat"
    room.index.revoke("unit-2", room.clock.ns)
    stranger = MemorySigner()
    forged = sign_request("POST", url, {}, b"{}", "unit-2", stranger, room.clock.ns // S)
    with pytest.raises(ApiError):
        room.service.authenticate("POST", url, forged, "198.51.100.7")
    assert kinds(room) == set()
    room.clock.ns += 61 * S  # the per-node throttle holds the next try back a minute
    real = sign_request("POST", url, {}, b"{}", "unit-2", room.units["unit-2"], room.clock.ns // S)
    with pytest.raises(ApiError):
        room.service.authenticate("POST", url, real, "198.51.100.7")
    assert kinds(room, "unit-2") == {Kind.REVOKED_KEY}


def test_positions_are_audited_per_view_and_hidden_without_the_right(room: Room) -> None:
    room.beat("unit-1")
    room.beat("unit-2", gnss=None)
    units = room.ops.units("olga", positions=True, context="map")
    assert {u["device_id"]: u["lat_deg"] for u in units} == {"unit-1": 48.85, "unit-2": None}
    [rec] = room.index.audit_log("view-unit-position")
    assert (rec.actor, rec.target, rec.detail["units"], rec.detail["context"]) == (
        "olga", "device:unit-1", ["unit-1"], "map")
    hidden = room.ops.units("audrey", positions=False, context="units")
    assert all(u["lat_deg"] is None for u in hidden) and len(room.index.audit_log("view-unit-position")) == 1
    page = room.ops.unit("olga", "unit-1", positions=True)
    assert page["lat_deg"] == 48.85 and page["clock_synced"] is True
    assert len(room.index.audit_log("view-unit-position")) == 2
    with pytest.raises(OpsError):
        room.ops.unit("olga", "nope", positions=True)


def test_heartbeats_and_alert_changes_are_published_to_subscribers(room: Room) -> None:
    async def run() -> list[dict[str, Any]]:
        sub = room.bus.subscribe(asyncio.get_running_loop(), max_queue=8)
        room.beat("unit-1", storage={"level": "critical"})
        got = await sub.get(1.0)
        room.bus.unsubscribe(sub)
        return got

    events = asyncio.run(run())
    assert [e["type"] for e in events] == ["alert", "unit"]
    assert events[0]["alert"]["kind"] == "storage-critical"
    assert events[1]["unit"]["state"] == "alarm" and events[1]["unit"]["lat_deg"] == 48.85


def test_a_slow_subscriber_is_dropped_not_buffered_for_ever(room: Room) -> None:
    async def run() -> bool:
        sub = room.bus.subscribe(asyncio.get_running_loop(), max_queue=3)
        for _ in range(5):
            room.bus.publish({"type": "unit"})
        got = await sub.get(0.1)
        return sub.overflowed and got == []

    assert asyncio.run(run())
