"""What the operations room shows of a unit, from its device row, its last heartbeat and its
alerts: a summary for the map and the list, and the detail page's facts. Pure, no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from hq.alerts import Alert, AlertPolicy, UnitFacts, as_number, clock_problem, get_path, position, unit_state
from hq.records import Device

NS_PER_S = 1_000_000_000


def facts(device: Device) -> UnitFacts:
    return UnitFacts(device_id=device.device_id, enrolled_utc_ns=device.enrolled_utc_ns,
                     revoked=device.revoked_utc_ns is not None, last_contact_utc_ns=device.last_heartbeat_utc_ns,
                     status=device.last_status)


def summary(unit: UnitFacts, standing: Iterable[Alert], now_ns: int, policy: AlertPolicy,
            with_position: bool = True) -> dict[str, Any]:
    """One unit for the map and the list: its state (the marker's colour), last position (only
    ``with_position``: a caller whose user may not see positions passes False), last contact,
    battery and its standing alerts."""
    mine = [a for a in standing if a.device_id == unit.device_id and a.standing]
    st = unit.status
    pos = position(st) if with_position else None
    return {
        "device_id": unit.device_id,
        "state": unit_state(unit, mine, now_ns, policy).value,
        "lat_deg": None if pos is None else pos[0],
        "lon_deg": None if pos is None else pos[1],
        "last_contact_utc_ns": unit.last_contact_utc_ns,
        "recording": get_path(st, "recording", "state"),
        "battery_pct": as_number(get_path(st, "battery", "battery_pct")),
        "storage": get_path(st, "storage", "level"),
        "alerts": [{"id": a.id, "kind": a.kind, "title": a.title, "acknowledged": a.acknowledged} for a in mine],
    }


def _sensor_faults(st: Mapping[str, Any] | None) -> dict[str, str | None]:
    sensors = get_path(st, "sensors")
    if not isinstance(sensors, Mapping):
        return {}
    return {str(n): get_path(ws, "last_error") for n, ws in sorted(sensors.items())
            if get_path(ws, "state") == "failed"}


def detail(device: Device, alerts: Iterable[Alert], hq_chain_head: tuple[int, str] | None, now_ns: int,
           policy: AlertPolicy) -> dict[str, Any]:
    """The unit's page: everything its last heartbeat said, what headquarters holds of its chain,
    and its alerts (standing first, then the recent ones)."""
    all_alerts = sorted(alerts, key=lambda a: (not a.standing, -a.id))
    st = device.last_status
    out = summary(facts(device), [a for a in all_alerts if a.standing], now_ns, policy)
    clock = clock_problem(st, device.last_heartbeat_utc_ns, policy)
    chain = get_path(st, "chain_head")
    out.update({
        "enrolled_utc_ns": device.enrolled_utc_ns,
        "revoked_utc_ns": device.revoked_utc_ns,
        "fingerprint": device.fingerprint,
        "since_contact_s": None if device.last_heartbeat_utc_ns is None
        else max(0.0, (now_ns - device.last_heartbeat_utc_ns) / NS_PER_S),
        "recording_id": get_path(st, "recording", "recording_id"),
        "stealth": get_path(st, "recording", "stealth"),
        "muted": get_path(st, "recording", "muted"),
        "charging": get_path(st, "battery", "charging"),
        "battery_error": get_path(st, "battery", "error"),
        "storage_free_bytes": get_path(st, "storage", "free_bytes"),
        "storage_hours_left": as_number(get_path(st, "storage", "hours_left")),
        "storage_alarm": get_path(st, "storage", "alarm"),
        "sync_backlog_entries": get_path(st, "sync", "backlog_entries"),
        "sync_backlog_bytes": get_path(st, "sync", "backlog_bytes"),
        "last_receipt_seq": get_path(st, "sync", "last_receipt_seq"),
        "unit_chain_head_seq": get_path(chain, "seq"),
        "unit_chain_head": get_path(chain, "hash"),
        "hq_chain_head_seq": None if hq_chain_head is None else hq_chain_head[0],
        "hq_contiguous_through": device.contiguous_through,
        "clock_source": get_path(st, "time", "source"),
        "clock_synced": get_path(st, "time", "synced"),
        "clock_gnss_offset_ms": as_number(get_path(st, "time", "gnss_offset_ms")),
        "clock_problem": None if clock is None else clock["reason"],
        "gnss_mode": get_path(st, "gnss", "mode"),
        "gnss_h_acc_m": as_number(get_path(st, "gnss", "h_acc_m")),
        "sensor_faults": _sensor_faults(st),
        "sensors": {str(n): get_path(ws, "state") for n, ws in sorted((get_path(st, "sensors") or {}).items())},
        "firmware": get_path(st, "firmware"),
        "config_sha256": get_path(st, "config_sha256"),
        "all_alerts": [a.as_dict() for a in all_alerts],
    })
    return out
