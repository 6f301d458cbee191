"""The unit's status, assembled once per request from its pieces, and the shapes its readers want.

The control socket answers :meth:`UnitStatus.as_dict`, the heartbeat sends
:meth:`UnitStatus.heartbeat`, the console summarises it (``UnitApi.status``) and systemd shows
:meth:`UnitStatus.line`: one snapshot, never three assemblies that drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent import __version__
from agent.sync.heartbeat import unit_status
from agent.unitapi.parts import UnitParts

FIX_NAMES = {1: "no fix", 2: "2D fix", 3: "3D fix"}


@dataclass(frozen=True, slots=True)
class PowerStatus:
    """The battery as last read: a reading, or the error reading it gave."""

    battery_pct: float | None = None
    charging: bool | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"error": self.error}
        return {"battery_pct": self.battery_pct, "charging": self.charging}


def read_power(power: Any) -> PowerStatus | None:
    """One reading of the power device (None: the unit has none). Never raises."""
    if power is None:
        return None
    try:
        p = power.read()
        return PowerStatus(round(p.battery_pct, 1), p.charging)
    except Exception as exc:  # a status read must never break the status
        return PowerStatus(error=str(exc))


@dataclass(frozen=True, slots=True)
class UnitStatus:
    """Everything the unit says about itself at one moment. ``recorder`` is the recorder's own
    snapshot; ``sensors`` each sensor worker's; ``sync`` the sync worker's (or why it is off)."""

    device_id: str
    firmware: str
    recorder: Mapping[str, Any]
    recorder_alive: bool
    sensors: Mapping[str, Mapping[str, Any]]
    storage: Mapping[str, Any]
    index: Mapping[str, Any]
    sync: Mapping[str, Any]
    power: PowerStatus | None
    config_sha256: str | None = None
    background: Mapping[str, Any] | None = None  # the background recording's, when it is on

    @property
    def state(self) -> str:
        return str(self.recorder.get("state"))

    def as_dict(self) -> dict[str, Any]:
        """The control socket's ``status``: the recorder's snapshot with the rest beside it."""
        st = dict(self.recorder)
        st["device_id"] = self.device_id
        st["firmware"] = self.firmware
        st["sensors"] = {name: dict(ws) for name, ws in self.sensors.items()}
        st["sync"] = dict(self.sync)
        st["storage"] = {**self.storage, "index": dict(self.index)}
        if self.power is not None:
            st["power"] = self.power.as_dict()
        if self.background is not None:
            st["background"] = dict(self.background)
        return st

    def heartbeat(self) -> dict[str, Any]:
        """What a heartbeat tells headquarters (the sync worker adds the backlog and chain head)."""
        return unit_status(self.recorder, self.storage, None if self.power is None else self.power.as_dict(),
                           firmware=self.firmware, config_sha256=self.config_sha256, sensors=self.sensors)

    def line(self) -> str:
        """One line for ``systemctl status``: the recording state and whatever is wrong."""
        return status_line(self.recorder, self.sensors)

    def faults(self, sync_alarm: str | None) -> list[str]:
        """Whatever is wrong, one line each, for the console."""
        faults = []
        for name, ws in self.sensors.items():
            if ws.get("state") not in ("running", "starting"):
                faults.append(f"sensor {name}: {ws.get('state')}: {ws.get('last_error') or '-'}")
        if self.recorder.get("last_error"):
            faults.append(f"recorder: {self.recorder['last_error']}")
        if not self.recorder_alive:
            faults.append("recorder: thread not running")
        if self.storage.get("alarm"):
            faults.append(f"storage: {self.storage['alarm']}")
        if sync_alarm:
            faults.append(f"sync: {sync_alarm}")
        if self.power is not None and self.power.error is not None:
            faults.append(f"battery: {self.power.error}")
        return faults


def status_line(recorder: Mapping[str, Any], sensors: Mapping[str, Mapping[str, Any]]) -> str:
    """The recording state and whatever is wrong, in one line: ``RECORDING; storage low; muted``."""
    parts = [str(recorder.get("state")).upper()]
    if recorder.get("storage_level") != "ok":
        parts.append(f"storage {recorder.get('storage_level')}")
    if recorder.get("stealth"):
        parts.append("stealth")
    if recorder.get("muted"):
        parts.append("muted")
    failed = sorted(name for name, ws in sensors.items() if ws.get("state") == "failed")
    if failed:
        parts.append("sensor fault: " + ", ".join(failed))
    return "; ".join(parts)


def sync_status(parts: UnitParts) -> dict[str, Any]:
    """The sync worker's snapshot, or that sync is off and why."""
    worker = getattr(parts, "sync", None)
    if worker is not None:
        st: dict[str, Any] = worker.get_status()
        return st
    return {"enabled": False, "problem": getattr(parts, "sync_problem", None)}


def collect_status(parts: UnitParts) -> UnitStatus:
    """Ask each piece once for its snapshot."""
    return UnitStatus(
        device_id=parts.config.device.id,
        firmware=__version__,
        recorder=parts.recorder.status(),
        recorder_alive=bool(parts.recorder.alive),
        sensors={w.sensor: w.status() for w in parts.workers},
        storage=parts.storage.get_status(),
        index=parts.store.stats(),
        sync=sync_status(parts),
        power=read_power(getattr(parts.sensors, "power", None)),
        config_sha256=parts.config.digest,
        background=None if (bg := getattr(parts, "background", None)) is None else bg.get_status(),
    )
