"""The operations room's service (no HTTP): units and their positions, alerts raised from
heartbeats and acknowledged by operators, live updates published, every view of a position
audited.

Who calls what: ``HqService`` tells it of each stored heartbeat (``heartbeat_seen``) and of each
request signed with a key it refused (``key_refused``); the ``AlertSweeper`` thread runs ``sweep``
every few seconds (no contact, quarantined uploads); the web routes call the rest with the signed-in
user's name. Positions are audited aggregated (docs/architecture.md, "The operations room"): one
``view-unit-position`` record when a user opens a unit list or map with the units it showed, then one
record per stream per minute naming the units whose positions the stream showed for the first time,
and one per unit detail view.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from hq.alert_store import AlertStore
from hq.alerts import CONDITIONS, EVENTS, Alert, AlertPolicy, Kind, UnitFacts, conditions, quarantine_due, reconcile
from hq.app import Periodic
from hq.audit import Auditor
from hq.events import EventBus
from hq.index import Index
from hq.service import HqService
from hq.unitview import detail, facts, summary

log = logging.getLogger(__name__)

COMPONENT = "hq-web"
POSITION_VIEW = "view-unit-position"
MAX_AUDITED_IDS = 500  # device ids named in one audit record; the count is always exact
NO_CONTACT_ONLY = frozenset({Kind.NO_CONTACT})
REVOKED_KEY_RETRY_S = 60  # a flood of requests with a revoked key costs one alert write a minute


class OpsError(RuntimeError):
    """No such unit or alert, or nothing to acknowledge."""


class OpsService:
    """Thread-safe: the index and the alert store serialise their writes; the throttle of
    revoked-key alerts is under a lock."""

    def __init__(self, index: Index, alerts: AlertStore, bus: EventBus, now_ns: Callable[[], int],
                 policy: AlertPolicy | None = None, auditor: Auditor | None = None) -> None:
        self.index = index
        self.alerts = alerts
        self.bus = bus
        self.policy = policy or AlertPolicy()
        self._now_ns = now_ns
        self.audit = auditor or Auditor(index, COMPONENT, now_ns)
        self._lock = threading.Lock()
        self._revoked_seen: dict[str, int] = {}

    def attach(self, service: HqService) -> None:
        """Listen to ``service``: its stored heartbeats and the keys it refuses."""
        service.on_heartbeat = self.heartbeat_seen
        service.on_key_refused = self.key_refused

    # -- what happens at headquarters ---------------------------------------------------------

    def heartbeat_seen(self, device_id: str, status: dict[str, Any], now_ns: int) -> None:
        """A heartbeat of ``device_id`` (enrolled and active: it was accepted) was stored with
        ``status``: decide its conditions, publish the unit. One query unless an alert changes."""
        unit = UnitFacts(device_id, now_ns, False, now_ns, status)
        standing = self.alerts.standing(device_id)
        changed = self._apply(unit, standing, now_ns)
        self._publish_unit(unit, changed if changed is not None else standing, now_ns)

    def _apply(self, unit: UnitFacts, standing: list[Alert], now_ns: int,
               only: frozenset[Kind] = CONDITIONS) -> list[Alert] | None:
        """Raise and clear ``unit``'s condition alerts; the standing alerts after, or None when
        nothing changed. Each change is published as an ``alert`` event."""
        changes = reconcile(conditions(unit, now_ns, self.policy), standing, only)
        if not changes:
            return None
        for kind, why in changes.raise_:
            raised = self.alerts.raise_alert(unit.device_id, kind, why, now_ns)
            if raised is not None:
                self._publish_alert("raised", raised)
        for alert in changes.clear:
            cleared = self.alerts.clear(alert.id, now_ns)
            if cleared is not None:
                self._publish_alert("cleared", cleared)
        return self.alerts.standing(unit.device_id)

    def key_refused(self, key_id: str, signed_by: Callable[[str], bool]) -> None:
        """A request claiming ``key_id`` was refused: if that names a revoked unit and the request
        is signed by that unit's key (``signed_by(public_pem)``), raise ``revoked-key`` (at most one
        try a minute per unit on this node)."""
        now_ns = self._now_ns()
        with self._lock:
            if now_ns < self._revoked_seen.get(key_id, 0):
                return
            self._revoked_seen[key_id] = now_ns + REVOKED_KEY_RETRY_S * 1_000_000_000
            if len(self._revoked_seen) > 10_000:  # keys named by strangers: keep the throttle bounded
                self._revoked_seen = {k: t for k, t in self._revoked_seen.items() if t > now_ns}
        device = self.index.device(key_id)
        if device is None or device.revoked_utc_ns is None or not signed_by(device.public_pem):
            return
        raised = self.alerts.raise_alert(key_id, Kind.REVOKED_KEY, {"revoked_utc_ns": device.revoked_utc_ns}, now_ns)
        if raised is not None:
            log.warning("a request signed with the revoked key of %s was refused", key_id)
            self._publish_alert("raised", raised)
            self._publish_unit(facts(device), self.alerts.standing(key_id), now_ns)

    def sweep(self) -> int:
        """What changes without a heartbeat: each unit's no-contact at ``now``, and new
        quarantined uploads; returns how many units' alerts changed. Light on purpose (it runs on
        every node every few seconds): contact times only, no unit's status is read unless its
        alerts changed (the other conditions are decided when a heartbeat arrives)."""
        now_ns = self._now_ns()
        standing = self.alerts.standing()
        by_device: dict[str, list[Alert]] = {}
        for a in standing:
            by_device.setdefault(a.device_id, []).append(a)
        quarantined = self.alerts.latest_quarantines()
        raised_at = self.alerts.last_raised(Kind.QUARANTINED_UPLOAD)
        changed = 0
        for contact in self.alerts.contacts():
            device_id = contact.device_id
            after = self._apply(contact, by_device.get(device_id, []), now_ns, only=NO_CONTACT_ONLY)
            q_at = quarantined.get(device_id)
            if quarantine_due(q_at, raised_at.get(device_id)):
                raised = self.alerts.raise_alert(device_id, Kind.QUARANTINED_UPLOAD, {"received_utc_ns": q_at}, now_ns)
                if raised is not None:
                    self._publish_alert("raised", raised)
                    after = self.alerts.standing(device_id)
            device = self.index.device(device_id) if after is not None else None
            if device is not None and after is not None:
                changed += 1
                self._publish_unit(facts(device), after, now_ns)
        return changed

    def _publish_unit(self, unit: UnitFacts, standing: list[Alert], now_ns: int) -> None:
        self.bus.publish({"type": "unit", "unit": summary(unit, standing, now_ns, self.policy)})

    def _publish_alert(self, change: str, alert: Alert) -> None:
        self.bus.publish({"type": "alert", "change": change, "alert": alert.as_dict()})

    # -- what the operations room asks ---------------------------------------------------------

    def units(self, user: str, *, positions: bool, context: str) -> list[dict[str, Any]]:
        """Every unit's summary; with ``positions`` (the user may see them) the view is audited
        as one ``view-unit-position`` record naming the units whose positions were shown."""
        now_ns = self._now_ns()
        standing = self.alerts.standing()
        out = [summary(facts(d), standing, now_ns, self.policy, with_position=positions)
               for d in self.index.devices()]
        if positions:
            self.positions_viewed(user, context, [u["device_id"] for u in out if u["lat_deg"] is not None])
        return out

    def unit(self, user: str, device_id: str, *, positions: bool) -> dict[str, Any]:
        """One unit's page; its position view is audited (one record per view)."""
        device = self.index.device(device_id)
        if device is None:
            raise OpsError(f"no unit {device_id!r}")
        page = detail(device, self.alerts.recent(50, device_id), self.index.chain_head(device_id),
                      self._now_ns(), self.policy)
        if not positions:
            page["lat_deg"] = page["lon_deg"] = None
        elif page["lat_deg"] is not None:
            self.positions_viewed(user, "unit", [device_id])
        return page

    def alert_list(self, limit: int = 200, device_id: str | None = None) -> list[Alert]:
        return self.alerts.recent(limit, device_id)

    def acknowledge(self, user: str, alert_id: int) -> Alert:
        """``user`` acknowledges an alert: audited with who and when; an event alert is cleared."""
        now_ns = self._now_ns()
        done = self.alerts.acknowledge(alert_id, user, now_ns)
        if done is None:
            found = self.alerts.get(alert_id)
            why = "no such alert" if found is None else (
                f"already acknowledged by {found.acknowledged_by}" if found.acknowledged else "already cleared")
            self.audit.record("alert-acknowledge", user, f"alert:{alert_id}", "refused", reason=why)
            raise OpsError(f"alert {alert_id}: {why}")
        self.audit.record("alert-acknowledge", user, f"device:{done.device_id}", "ok", alert_id=done.id, kind=done.kind,
                          raised_utc_ns=done.raised_utc_ns, cleared=done.kind in EVENTS)
        self._publish_alert("acknowledged", done)
        device = self.index.device(done.device_id)
        if device is not None:
            self._publish_unit(facts(device), self.alerts.standing(done.device_id), now_ns)
        return done

    def positions_viewed(self, user: str, context: str, device_ids: Iterable[str]) -> None:
        """One ``view-unit-position`` audit record: ``user`` was shown the positions of
        ``device_ids`` (named up to MAX_AUDITED_IDS, counted exactly) in ``context`` (map, unit,
        stream). Its target is ``device:ID`` for one unit, ``devices:N`` for several."""
        ids = sorted(set(device_ids))
        if not ids:
            return
        target = f"device:{ids[0]}" if len(ids) == 1 else f"devices:{len(ids)}"
        self.audit.record(POSITION_VIEW, user, target, "ok", context=context, count=len(ids),
                          units=ids[:MAX_AUDITED_IDS], truncated=len(ids) > MAX_AUDITED_IDS)


class AlertSweeper(Periodic):
    """``OpsService.sweep`` every ``interval_s`` on its own thread."""

    def __init__(self, ops: OpsService, interval_s: float) -> None:
        super().__init__(ops.sweep, interval_s, "hq-alerts", "alert sweep")
