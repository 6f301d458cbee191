"""The running unit behind every front-end: :class:`UnitApi`.

Reads go to the pieces' own snapshots, assembled once (``agent.unitapi.status``); changes go
through the recorder's command queue (the only way anything reaches the chain), so no front-end
thread ever touches evidence. Config changes are in ``agent.unitapi.config_ops``.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

from agent.config import resolve_path
from agent.console import selftest
from agent.console.auth import TrustStore, key_fingerprint
from agent.console.backend import SelftestItem
from agent.console.logring import LogRing
from agent.evidence.keys import KeyFileError, fingerprint, load_hq_public, load_receipt_public, public_der
from agent.recorder import CommandError
from agent.unitapi.config_ops import ConfigEditor
from agent.unitapi.errors import Refused
from agent.unitapi.parts import UnitParts
from agent.unitapi.status import FIX_NAMES, UnitStatus, collect_status, status_line

log = logging.getLogger(__name__)

RESTART_DELAY_S = 1.0  # time for the answer to reach the technician before the agent stops
SWITCHES = ("stealth", "mute")


class UnitApi:
    """Every read and change a front-end may ask of a running unit. Implements the console's
    ``ConsoleBackend``; the control socket and the heartbeat use it too. Every method returns
    plain JSON-able data or raises :class:`Refused`.

    ``restart`` stops the unit cleanly so that it is started again (the daemon passes one that
    makes ``bodycam run`` exit with its restart code; by default SIGTERM to itself). ``ring`` and
    ``trust`` are the console's log ring and technician keys (:meth:`for_console`).
    """

    def __init__(self, parts: UnitParts, *, config_path: Path, restart: Callable[[], None] | None = None,
                 ring: LogRing | None = None, trust: TrustStore | None = None) -> None:
        self._parts = parts
        self._config_path = config_path
        self._config = ConfigEditor(parts.config, config_path, sign=self.recorder_command)
        self._restart = restart or (lambda: os.kill(os.getpid(), signal.SIGTERM))
        self._ring = ring
        self._trust = trust
        self._started_ns = parts.clock.monotonic_ns()

    def for_console(self, ring: LogRing, trust: TrustStore) -> UnitApi:
        """This unit as one console sees it: with its log ring and the technicians it trusts."""
        twin = UnitApi(self._parts, config_path=self._config_path, restart=self._restart, ring=ring, trust=trust)
        twin._started_ns = self._started_ns
        return twin

    @property
    def parts(self) -> UnitParts:
        return self._parts

    @property
    def device_id(self) -> str:
        return self._parts.config.device.id

    # -- status --------------------------------------------------------------------------------

    def get_status(self) -> UnitStatus:
        """The whole status, assembled once."""
        return collect_status(self._parts)

    def status_line(self) -> str:
        """For ``systemctl status``, every second: only the recorder and the sensors are asked."""
        return status_line(self._parts.recorder.status(), {w.sensor: w.status() for w in self._parts.workers})

    def heartbeat_status(self) -> dict[str, Any]:
        return self.get_status().heartbeat()

    def status(self) -> dict[str, Any]:
        """The console's summary of :meth:`get_status`."""
        st = self.get_status()
        rec = st.recorder
        power = st.power
        battery = None if power is None else (
            {"error": power.error} if power.error is not None else {"pct": power.battery_pct,
                                                                    "charging": power.charging})
        gnss = rec.get("gnss")
        sync = self._sync_summary(st.sync)
        return {
            "device_id": st.device_id,
            "state": rec.get("state"),
            "recording_id": rec.get("recording_id"),
            "stealth": rec.get("stealth"),
            "muted": rec.get("muted"),
            "uptime_s": round((self._parts.clock.monotonic_ns() - self._started_ns) / 1e9, 1),
            "storage": {k: st.storage.get(k) for k in ("level", "free_bytes", "hours_left", "alarm")},
            "battery": battery,
            "time": rec.get("time"),
            "gnss": None if gnss is None else {"fix": FIX_NAMES.get(gnss.get("mode"), "unknown"),
                                               "h_acc_m": gnss.get("h_acc_m")},
            "sync": sync,
            "frames": rec.get("frames"),
            "dropped": rec.get("dropped"),
            "lost_to_storage": rec.get("lost_to_storage"),
            "chain": rec.get("chain"),
            "faults": st.faults(sync.get("alarm")),
        }

    def sensors(self) -> list[dict[str, Any]]:
        st = self.get_status()
        dropped = st.recorder.get("dropped") or {}
        out = []
        for name, ws in st.sensors.items():
            dev = ws.get("device")
            dev = dev if isinstance(dev, dict) else {}
            temp_c = dev.get("temperature_c")
            if isinstance(dev.get("fpa_temp_ck"), int):
                temp_c = round(dev["fpa_temp_ck"] / 100 - 273.15, 2)
            out.append({
                "name": name,
                "driver": dev.get("driver") or self._driver_of(name),
                "state": ws.get("state"),
                "rate_hz_configured": dev.get("rate_hz"),
                "rate_hz_achieved": dev.get("achieved_rate_hz"),
                "samples": ws.get("items"),
                "dropped": dropped.get(name, dev.get("dropped")),
                "restarts": ws.get("restarts"),
                "last_error": ws.get("last_error") or dev.get("last_error"),
                "temperature_c": temp_c,
            })
        return out

    def _driver_of(self, sensor: str) -> str:
        cfg = self._parts.config
        if sensor in cfg.cameras:
            return cfg.cameras[sensor].driver
        section = {"audio": "microphone"}.get(sensor, sensor)
        sc = getattr(cfg, section, None)
        return str(getattr(sc, "driver", "?"))

    def selftest(self) -> list[SelftestItem]:
        a = self._parts
        items = selftest.check_sensors(a.workers, a.clock)
        kinds = [t.kind for t in a.sensors.tracks]
        codec = "libopus" if a.config.recording.audio_codec == "opus" else "aac"
        items += selftest.check_encoders(kinds, codec)
        try:
            hq_public = load_hq_public(resolve_path(a.data_dir, a.config.hq.public_key))
        except KeyFileError as exc:
            items.append(SelftestItem("seal test segment", "fail", f"headquarters key: {exc}"))
        else:
            items.append(selftest.check_sealing(a.keystore, hq_public, self.device_id,
                                                a.config.evidence.chunk_bytes, a.clock))
        items.append(selftest.check_store(a.store.integrity_check))
        items.append(selftest.check_clock(a.clock))
        items.append(selftest.check_storage(a.storage.get_status()))
        alive = a.recorder.alive
        items.append(SelftestItem("recorder", "pass" if alive else "fail",
                                  f"state {a.recorder.status().get('state')}" if alive else "thread not running"))
        return items

    def log_tail(self, n: int) -> list[str]:
        return [] if self._ring is None else self._ring.tail(n)

    def time_info(self) -> dict[str, Any]:
        clock = self._parts.clock
        q = clock.quality()
        t = self._parts.recorder.status().get("time") or {}
        return {"utc_ns": clock.utc_ns(), "source": q.source.value, "synced": q.synced,
                "uncertainty_ms": None if q.uncertainty_ns is None else q.uncertainty_ns / 1e6,
                "gnss_offset_ms": t.get("gnss_offset_ms"), "monotonic_s": round(clock.monotonic_ns() / 1e9, 3)}

    def gps(self) -> dict[str, Any]:
        st = self.get_status()
        gnss = st.recorder.get("gnss")
        ws = st.sensors.get("gnss")
        receiver: dict[str, Any] | None = None
        if ws is not None:
            dev = ws.get("device")
            receiver = {"state": ws.get("state"), "reports": ws.get("items"), "last_error": ws.get("last_error")}
            if isinstance(dev, dict):  # quality only: a driver's status never carries the position here
                receiver.update({k: v for k, v in dev.items()
                                 if not any(p in k for p in ("lat", "lon", "alt", "position"))})
        fix = None if gnss is None else {
            "mode": FIX_NAMES.get(gnss.get("mode"), "unknown"), "h_acc_m": gnss.get("h_acc_m"),
            "lat_deg": gnss.get("lat_deg"), "lon_deg": gnss.get("lon_deg")}
        return {"enabled": ws is not None, "fix": fix, "receiver": receiver}

    def storage(self) -> dict[str, Any]:
        st = dict(self._parts.storage.get_status())
        st["index"] = self._parts.store.stats()
        return st

    def sync_status(self) -> dict[str, Any]:
        worker = getattr(self._parts, "sync", None)
        return self._sync_summary(None if worker is None else worker.get_status(), full=True)

    def _sync_summary(self, st: Any, full: bool = False) -> dict[str, Any]:
        if getattr(self._parts, "sync", None) is not None and st is not None:
            last = st.get("last_receipt") or {}
            out = {"state": st.get("state"), "connected": st.get("connected"),
                   "backlog_entries": (st.get("backlog") or {}).get("entries"),
                   "backlog_bytes": (st.get("backlog") or {}).get("bytes"),
                   "last_receipt_seq": last.get("seq"), "last_receipt_utc_ns": last.get("utc_ns"),
                   "alarm": (st.get("alarm") or {}).get("message")}
            if full:
                out.update({k: st.get(k) for k in ("hq_url", "last_error", "next_retry_in_s", "stalled_s",
                                                   "sent_bytes", "last_heartbeat_utc_ns")})
            return out
        pending = self._parts.store.pending_upload()
        return {"state": "off" if not self._parts.config.hq.url else "not running", "connected": False,
                "backlog_entries": len(pending),
                "backlog_bytes": sum(max(0, s.size_bytes - s.upload_offset) for s in pending),
                "last_receipt_seq": None, "last_receipt_utc_ns": None, "alarm": None}

    def key_fingerprints(self) -> dict[str, Any]:
        a = self._parts
        keys: list[dict[str, Any]] = [{"role": "device", "name": self.device_id,
                                       "fingerprint": fingerprint(public_der(a.keystore.public_key()))}]
        hq_path = resolve_path(a.data_dir, a.config.hq.public_key)
        for role, loader in (("hq-encryption", load_hq_public), ("hq-receipts", load_receipt_public)):
            try:
                keys.append({"role": role, "name": None, "fingerprint": fingerprint(public_der(loader(hq_path)))})
            except KeyFileError as exc:
                keys.append({"role": role, "name": None, "fingerprint": None, "error": str(exc)})
        if self._trust is not None:
            for fp, (name, _key) in sorted(self._trust.listed.items()):
                keys.append({"role": "technician", "name": name, "fingerprint": fp})
            if self._trust.ca is not None:
                keys.append({"role": "technician-ca", "name": None, "fingerprint": key_fingerprint(self._trust.ca)})
        return {"keys": keys}

    # -- config --------------------------------------------------------------------------------

    def version(self) -> dict[str, Any]:
        return self._config.version()

    def config_get(self, key: str) -> dict[str, Any]:
        return self._config.get(key)

    def config_set(self, key: str, value: object, actor: str) -> dict[str, Any]:
        return self._config.set(key, value, actor)

    # -- changes -------------------------------------------------------------------------------

    def recorder_command(self, name: str, actor: str, **args: Any) -> dict[str, Any]:
        """A command through the recorder's queue; its refusal or silence as :class:`Refused`."""
        try:
            result: dict[str, Any] = self._parts.recorder.command(name, actor, **args)
        except CommandError as exc:
            raise Refused("refused", str(exc)) from None
        except FutureTimeout:
            raise Refused("unavailable", "the recorder did not answer within 10 s") from None
        return result

    def record(self, action: str, actor: str, note: str | None = None, trigger: str = "console") -> dict[str, Any]:
        if action == "start":
            return self.recorder_command("start", actor, trigger=trigger)
        if action == "stop":
            return self.recorder_command("stop", actor)
        if action == "mark":
            return self.recorder_command("mark", actor, **({"note": note} if note else {}))
        raise Refused("bad-value", f"record {action!r}: start, stop or mark")

    def switch(self, name: str, on: bool, actor: str) -> dict[str, Any]:
        """Stealth or mute, on or off."""
        if name not in SWITCHES:
            raise Refused("bad-value", f"{name!r}: {' or '.join(SWITCHES)}")
        return self.recorder_command(name, actor, on=on)

    def sync_now(self, actor: str) -> dict[str, Any]:
        worker = getattr(self._parts, "sync", None)
        if worker is None or not hasattr(worker, "kick"):
            raise Refused("unavailable", "sync is off on this unit (no hq.url)")
        worker.kick()
        return {"kicked": True}

    def reboot(self, actor: str) -> dict[str, Any]:
        log.warning("restart requested by %s", actor)
        timer = threading.Timer(RESTART_DELAY_S, self._restart)
        timer.daemon = True
        timer.start()
        return {"restarting": True, "message": "stopping cleanly (open segments are sealed); "
                                                 "the service manager starts the agent again"}

    def audit(self, actor: str, action: str, target: str, outcome: str, **detail: Any) -> None:
        try:
            self._parts.store.audit(actor, action, target, outcome, **detail)
        except Exception as exc:  # an audit failure is logged loudly, never crashes a front-end
            log.error("cannot audit %s %s by %s: %s", action, outcome, actor, exc)
