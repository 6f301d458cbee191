"""Alerts about units, decided from their last heartbeat and ``now``: pure, no I/O.

Two kinds of alert. A *condition* holds while something is true of the unit (no contact for
``no_contact_s``, storage critical, a failed sensor, an unsynchronised clock, a low battery): it is
raised when it starts to hold and cleared by headquarters when it stops. An *event* happened once
(an upload quarantined, a request signed with a revoked key): nothing clears it but an operator's
acknowledgement. Acknowledging a condition records who saw it and when; it stays standing until
the condition ends. The state of the alerts is kept by ``hq.alert_store``; this module only decides.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

NS_PER_S = 1_000_000_000


class AlertError(ValueError):
    """A policy value out of its bounds, or an alert that cannot be acted on."""


class Kind(enum.StrEnum):
    NO_CONTACT = "no-contact"
    STORAGE_CRITICAL = "storage-critical"
    SENSOR_FAULT = "sensor-fault"
    CLOCK_UNSYNCHRONISED = "clock-unsynchronised"
    BATTERY_LOW = "battery-low"
    QUARANTINED_UPLOAD = "quarantined-upload"
    REVOKED_KEY = "revoked-key"


CONDITIONS = frozenset({Kind.NO_CONTACT, Kind.STORAGE_CRITICAL, Kind.SENSOR_FAULT, Kind.CLOCK_UNSYNCHRONISED,
                        Kind.BATTERY_LOW})
EVENTS = frozenset({Kind.QUARANTINED_UPLOAD, Kind.REVOKED_KEY})

TITLES = {
    Kind.NO_CONTACT: "No contact",
    Kind.STORAGE_CRITICAL: "Storage critical",
    Kind.SENSOR_FAULT: "Sensor fault",
    Kind.CLOCK_UNSYNCHRONISED: "Clock unsynchronised",
    Kind.BATTERY_LOW: "Battery low",
    Kind.QUARANTINED_UPLOAD: "Upload quarantined",
    Kind.REVOKED_KEY: "Revoked key seen",
}

TITLES_BY_NAME: dict[str, str] = {str(k): v for k, v in TITLES.items()}

# The unit's storage levels (agent/storage.py) at which it gives up the pre-event buffer or stops.
CRITICAL_STORAGE_LEVELS = frozenset({"critical", "full", "exhausted"})


@dataclass(frozen=True, slots=True)
class AlertPolicy:
    """When a condition holds. ``no_contact_s``: a unit heard from longer ago is offline (five
    missed heartbeats at the unit's default 60 s). ``clock_offset_max_s``: a unit whose UTC differs
    from headquarters' by more than this (at the heartbeat's arrival, so network delay counts) has
    an unsynchronised clock even if it believes otherwise. ``battery_low_pct``: below it, not
    charging, the battery is low."""

    no_contact_s: float = 300.0
    clock_offset_max_s: float = 10.0
    battery_low_pct: float = 10.0

    def __post_init__(self) -> None:
        for name, low, high in (("no_contact_s", 1.0, 7 * 86400.0), ("clock_offset_max_s", 0.1, 3600.0),
                                ("battery_low_pct", 0.0, 100.0)):
            value = getattr(self, name)
            if not low <= value <= high:
                raise AlertError(f"alert policy {name} = {value:g} is out of range {low:g}..{high:g}")


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert as the index keeps it. ``cleared_utc_ns`` None: standing."""

    id: int
    device_id: str
    kind: str
    raised_utc_ns: int
    detail: Mapping[str, Any] = field(default_factory=dict)
    cleared_utc_ns: int | None = None
    acknowledged_utc_ns: int | None = None
    acknowledged_by: str | None = None

    @property
    def standing(self) -> bool:
        return self.cleared_utc_ns is None

    @property
    def acknowledged(self) -> bool:
        return self.acknowledged_utc_ns is not None

    @property
    def title(self) -> str:
        return TITLES_BY_NAME.get(self.kind, self.kind)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "device_id": self.device_id, "kind": self.kind, "title": self.title,
                "raised_utc_ns": self.raised_utc_ns, "detail": dict(self.detail),
                "text": describe(self.kind, self.detail),
                "cleared_utc_ns": self.cleared_utc_ns, "acknowledged_utc_ns": self.acknowledged_utc_ns,
                "acknowledged_by": self.acknowledged_by}


def describe(kind: str, detail: Mapping[str, Any]) -> str:
    """One sentence for a person: what the alert's detail says."""
    if kind == Kind.NO_CONTACT:
        return f"not heard from for more than {as_number(detail.get('no_contact_s')) or 0:g} s" + (
            "" if detail.get("last_contact_utc_ns") else " since enrolment")
    if kind == Kind.STORAGE_CRITICAL:
        free = as_number(detail.get("free_bytes"))
        return f"storage {detail.get('level')}" + ("" if free is None else f", {free / 1e9:.1f} GB free")
    if kind == Kind.SENSOR_FAULT:
        sensors = detail.get("sensors")
        names = sensors.items() if isinstance(sensors, Mapping) else ()
        return "failed: " + "; ".join(f"{n} ({why or 'no detail'})" for n, why in names)
    if kind == Kind.CLOCK_UNSYNCHRONISED:
        return str(detail.get("reason", "clock not synchronised"))
    if kind == Kind.BATTERY_LOW:
        return f"battery at {as_number(detail.get('battery_pct')) or 0:g} %, not charging"
    if kind == Kind.QUARANTINED_UPLOAD:
        return "an upload failed its checks and was quarantined (the file is kept in quarantine at headquarters)"
    if kind == Kind.REVOKED_KEY:
        return "a request signed with this unit's revoked key was refused: the device may be in other hands"
    return ", ".join(f"{k}: {v}" for k, v in detail.items())


@dataclass(frozen=True, slots=True)
class UnitFacts:
    """What headquarters knows of one unit for the alert decisions."""

    device_id: str
    enrolled_utc_ns: int
    revoked: bool
    last_contact_utc_ns: int | None
    status: Mapping[str, Any] | None


def get_path(doc: Mapping[str, Any] | None, *path: str) -> Any:
    """``doc[path[0]][path[1]]...``, or None where any step is missing or not a mapping."""
    value: Any = doc
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def as_number(value: Any) -> float | None:
    """A heartbeat's number: canonical JSON sends non-integers as decimal strings."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def no_contact(unit: UnitFacts, now_ns: int, policy: AlertPolicy) -> bool:
    """Not heard from for ``no_contact_s`` (counted from enrolment if never heard from)."""
    since = unit.last_contact_utc_ns if unit.last_contact_utc_ns is not None else unit.enrolled_utc_ns
    return now_ns - since > policy.no_contact_s * NS_PER_S


def conditions(unit: UnitFacts, now_ns: int, policy: AlertPolicy) -> dict[Kind, dict[str, Any]]:
    """The condition alerts that hold for ``unit`` at ``now_ns``, each with its detail. A revoked
    unit has none (it is no longer expected to report); an absent field decides nothing."""
    if unit.revoked:
        return {}
    held: dict[Kind, dict[str, Any]] = {}
    if no_contact(unit, now_ns, policy):
        held[Kind.NO_CONTACT] = {"last_contact_utc_ns": unit.last_contact_utc_ns, "no_contact_s": policy.no_contact_s}
    st = unit.status
    level = get_path(st, "storage", "level")
    if level in CRITICAL_STORAGE_LEVELS:
        held[Kind.STORAGE_CRITICAL] = {"level": level, "free_bytes": get_path(st, "storage", "free_bytes")}
    sensors = get_path(st, "sensors")
    if isinstance(sensors, Mapping):
        failed = {str(name): get_path(ws, "last_error") for name, ws in sorted(sensors.items())
                  if get_path(ws, "state") == "failed"}
        if failed:
            held[Kind.SENSOR_FAULT] = {"sensors": failed}
    clock = clock_problem(st, unit.last_contact_utc_ns, policy)
    if clock is not None:
        held[Kind.CLOCK_UNSYNCHRONISED] = clock
    pct = as_number(get_path(st, "battery", "battery_pct"))
    if pct is not None and pct < policy.battery_low_pct and get_path(st, "battery", "charging") is not True:
        held[Kind.BATTERY_LOW] = {"battery_pct": pct}
    return held


def clock_problem(status: Mapping[str, Any] | None, received_utc_ns: int | None,
                  policy: AlertPolicy) -> dict[str, Any] | None:
    """Why the unit's clock is not trustworthy, or None: the unit says it is not synchronised, or its
    UTC when it made the heartbeat is further from headquarters' at arrival than the policy allows."""
    synced = get_path(status, "time", "synced")
    source = get_path(status, "time", "source")
    if synced is False:
        return {"reason": "the unit reports its clock unsynchronised", "source": source}
    unit_utc = get_path(status, "utc_ns")
    if isinstance(unit_utc, int) and received_utc_ns is not None:
        offset_s = (unit_utc - received_utc_ns) / NS_PER_S
        if abs(offset_s) > policy.clock_offset_max_s:
            return {"reason": f"the unit's clock is {offset_s:+.1f} s from headquarters'",
                    "offset_s": round(offset_s, 1), "source": source}
    return None


@dataclass(frozen=True, slots=True)
class Changes:
    """What to do to the alert table: conditions to raise (kind, detail), standing alerts to clear."""

    raise_: tuple[tuple[Kind, dict[str, Any]], ...] = ()
    clear: tuple[Alert, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.raise_ or self.clear)


def reconcile(held: Mapping[Kind, dict[str, Any]], standing: Iterable[Alert],
              only: frozenset[Kind] = CONDITIONS) -> Changes:
    """Conditions in ``held`` without a standing alert are raised; standing condition alerts (of
    the kinds in ``only``) whose condition no longer holds are cleared. Events are left alone."""
    standing_by_kind = {a.kind: a for a in standing if a.standing}
    raise_ = tuple((kind, detail) for kind, detail in sorted(held.items()) if kind in only
                   and kind not in standing_by_kind)
    clear = tuple(a for kind, a in sorted(standing_by_kind.items()) if kind in only and kind not in held)
    return Changes(raise_, clear)


def quarantine_due(latest_quarantine_utc_ns: int | None, last_raised_utc_ns: int | None) -> bool:
    """An upload was quarantined since the last quarantine alert of the unit was raised."""
    if latest_quarantine_utc_ns is None:
        return False
    return last_raised_utc_ns is None or latest_quarantine_utc_ns > last_raised_utc_ns


class UnitState(enum.StrEnum):
    """How the map colours a unit."""

    RECORDING = "recording"
    READY = "ready"
    OFFLINE = "offline"
    ALARM = "alarm"
    REVOKED = "revoked"


def unit_state(unit: UnitFacts, standing: Iterable[Alert], now_ns: int, policy: AlertPolicy) -> UnitState:
    """Alarm while any standing alert other than no-contact is unacknowledged; else offline when
    not heard from for ``no_contact_s``; else recording or ready as the last heartbeat said."""
    if unit.revoked:
        return UnitState.REVOKED
    if any(a.standing and not a.acknowledged and a.kind != Kind.NO_CONTACT for a in standing):
        return UnitState.ALARM
    if no_contact(unit, now_ns, policy):
        return UnitState.OFFLINE
    return UnitState.RECORDING if get_path(unit.status, "recording", "state") == "recording" else UnitState.READY


def position(status: Mapping[str, Any] | None) -> tuple[float, float] | None:
    """The last fix's (lat_deg, lon_deg), when the heartbeat holds a sane one."""
    lat = as_number(get_path(status, "gnss", "lat_deg"))
    lon = as_number(get_path(status, "gnss", "lon_deg"))
    if lat is None or lon is None or not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        return None
    return lat, lon
