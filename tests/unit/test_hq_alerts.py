"""Alert decisions (hq/alerts.py): pure, over a unit's last heartbeat and ``now``."""

from __future__ import annotations

from typing import Any

import pytest

from hq.alerts import (
    Alert,
    AlertError,
    AlertPolicy,
    Kind,
    UnitFacts,
    UnitState,
    conditions,
    describe,
    position,
    quarantine_due,
    reconcile,
    unit_state,
)

S = 1_000_000_000
T0 = 1_790_000_000 * S
POLICY = AlertPolicy(no_contact_s=300, clock_offset_max_s=10, battery_low_pct=10)


def healthy(**over: Any) -> dict[str, Any]:
    st: dict[str, Any] = {
        "utc_ns": T0, "recording": {"state": "ready"}, "storage": {"level": "ok", "free_bytes": 10**10},
        "battery": {"battery_pct": 80, "charging": False}, "time": {"source": "ntp", "synced": True},
        "sensors": {"chest": {"state": "running", "last_error": None}},
        "gnss": {"mode": 3, "lat_deg": "51.5", "lon_deg": "-0.12"},
    }
    st.update(over)
    return st


def unit(status: dict[str, Any] | None = None, last: int | None = T0, revoked: bool = False) -> UnitFacts:
    return UnitFacts("u1", T0 - 3600 * S, revoked, last, healthy() if status is None else status)


def test_a_healthy_unit_heard_from_recently_raises_nothing() -> None:
    assert conditions(unit(), T0 + 299 * S, POLICY) == {}


def test_no_contact_after_the_configured_time_and_from_enrolment_if_never_heard() -> None:
    assert set(conditions(unit(), T0 + 301 * S, POLICY)) == {Kind.NO_CONTACT}
    assert set(conditions(unit(), T0 + 301 * S, AlertPolicy(no_contact_s=600))) == set()
    never = UnitFacts("u2", T0, False, None, None)
    assert conditions(never, T0 + 10 * S, POLICY) == {}
    assert set(conditions(never, T0 + 400 * S, POLICY)) == {Kind.NO_CONTACT}


def test_each_condition_from_the_heartbeat_fields_that_carry_it() -> None:
    bad = healthy(storage={"level": "critical", "free_bytes": 5}, battery={"battery_pct": "7.5", "charging": False},
                  time={"source": "rtc", "synced": False},
                  sensors={"chest": {"state": "failed", "last_error": "gone"}, "mic": {"state": "running"}})
    held = conditions(unit(bad), T0 + S, POLICY)
    assert set(held) == {Kind.STORAGE_CRITICAL, Kind.BATTERY_LOW, Kind.SENSOR_FAULT, Kind.CLOCK_UNSYNCHRONISED}
    assert held[Kind.SENSOR_FAULT] == {"sensors": {"chest": "gone"}}
    assert held[Kind.BATTERY_LOW] == {"battery_pct": 7.5}
    # Charging is not low; "low" storage is a warning, not critical.
    calm = healthy(storage={"level": "low"}, battery={"battery_pct": 5, "charging": True})
    assert conditions(unit(calm), T0 + S, POLICY) == {}


def test_a_clock_that_believes_itself_synced_but_is_far_from_headquarters_is_unsynchronised() -> None:
    off = healthy(utc_ns=T0 - 30 * S)
    held = conditions(unit(off, last=T0), T0 + S, POLICY)
    assert set(held) == {Kind.CLOCK_UNSYNCHRONISED} and held[Kind.CLOCK_UNSYNCHRONISED]["offset_s"] == -30.0
    assert conditions(unit(healthy(utc_ns=T0 - 5 * S), last=T0), T0 + S, POLICY) == {}


def test_a_revoked_unit_has_no_conditions_and_absent_fields_decide_nothing() -> None:
    assert conditions(unit(revoked=True, last=T0 - 10**6 * S), T0, POLICY) == {}
    assert conditions(unit({"recording": {"state": "ready"}}), T0 + S, POLICY) == {}


def alert(kind: str, id_: int = 1, **kw: Any) -> Alert:
    return Alert(id_, "u1", kind, T0, {}, **kw)


def test_reconcile_raises_new_conditions_clears_ended_ones_and_leaves_events() -> None:
    standing = [alert(Kind.NO_CONTACT, 1), alert(Kind.QUARANTINED_UPLOAD, 2), alert(Kind.STORAGE_CRITICAL, 3)]
    changes = reconcile({Kind.STORAGE_CRITICAL: {}, Kind.SENSOR_FAULT: {"sensors": {}}}, standing)
    assert [k for k, _ in changes.raise_] == [Kind.SENSOR_FAULT]
    assert [a.id for a in changes.clear] == [1]
    assert not reconcile({Kind.STORAGE_CRITICAL: {}}, [alert(Kind.STORAGE_CRITICAL)])


def test_a_quarantine_alert_is_due_only_for_a_quarantine_newer_than_the_last_alert() -> None:
    assert not quarantine_due(None, None)
    assert quarantine_due(T0, None)
    assert not quarantine_due(T0, T0)
    assert quarantine_due(T0 + 1, T0)


def test_the_map_colour_alarm_offline_recording_ready() -> None:
    now = T0 + S
    assert unit_state(unit(), [], now, POLICY) is UnitState.READY
    assert unit_state(unit(healthy(recording={"state": "recording"})), [], now, POLICY) is UnitState.RECORDING
    assert unit_state(unit(), [], T0 + 400 * S, POLICY) is UnitState.OFFLINE
    # An offline unit is offline, not alarm, for its no-contact alert; another unacknowledged alert is alarm.
    assert unit_state(unit(), [alert(Kind.NO_CONTACT)], T0 + 400 * S, POLICY) is UnitState.OFFLINE
    assert unit_state(unit(), [alert(Kind.SENSOR_FAULT)], now, POLICY) is UnitState.ALARM
    acked = alert(Kind.SENSOR_FAULT, acknowledged_utc_ns=now, acknowledged_by="op")
    assert unit_state(unit(), [acked], now, POLICY) is UnitState.READY
    assert unit_state(unit(revoked=True), [], now, POLICY) is UnitState.REVOKED


def test_position_needs_sane_coordinates() -> None:
    assert position(healthy()) == (51.5, -0.12)
    assert position(healthy(gnss=None)) is None
    assert position(healthy(gnss={"lat_deg": 91, "lon_deg": 0})) is None
    assert position(healthy(gnss={"lat_deg": "x", "lon_deg": 0})) is None


def test_policy_values_are_bounded_with_their_name() -> None:
    with pytest.raises(AlertError, match="no_contact_s = 0 is out of range"):
        AlertPolicy(no_contact_s=0)


def test_each_alert_reads_as_one_sentence() -> None:
    assert describe(Kind.NO_CONTACT, {"no_contact_s": 300.0, "last_contact_utc_ns": T0}) == (
        "not heard from for more than 300 s")
    assert describe(Kind.NO_CONTACT, {"no_contact_s": 300, "last_contact_utc_ns": None}).endswith("since enrolment")
    assert describe(Kind.SENSOR_FAULT, {"sensors": {"chest": "EIO", "mic": None}}) == (
        "failed: chest (EIO); mic (no detail)")
    full = {"level": "full", "free_bytes": 2_500_000_000}
    assert describe(Kind.STORAGE_CRITICAL, full) == "storage full, 2.5 GB free"
    assert describe(Kind.BATTERY_LOW, {"battery_pct": 7.5}) == "battery at 7.5 %, not charging"
    assert alert(Kind.CLOCK_UNSYNCHRONISED).as_dict()["text"] == "clock not synchronised"
