"""The running agent as the console sees it: :class:`ConsoleBackend` over ``agent.daemon.Agent``.

Reads go to the pieces' own ``status()``/``get_status()`` snapshots; changes go through the
recorder's command queue (the only way anything reaches the chain), so the console thread never
touches evidence. Config changes are validated by ``agent.config``, written atomically, and
signed into the chain as a ``config-changed`` event by the recorder; they apply at the next
start.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import signal
import threading
import types
from collections.abc import Callable, Mapping
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent import __version__
from agent.config import Config, ConfigError, load_config, resolve_path
from agent.config.edit import set_setting
from agent.config.table import lookup, settable_keys
from agent.console import selftest
from agent.console.auth import TrustStore, key_fingerprint
from agent.console.backend import BackendError, SelftestItem
from agent.console.logring import LogRing
from agent.evidence.format import FORMAT_VERSION
from agent.evidence.keys import KeyFileError, fingerprint, load_hq_public, load_receipt_public, public_der
from agent.fsutil import atomic_write_bytes
from agent.recorder import CommandError

if TYPE_CHECKING:
    from agent.daemon import Agent

log = logging.getLogger(__name__)

# What a technician may change over the console: tuning that cannot weaken the evidence, as
# declared in agent.config (keys, headquarters, drivers, storage thresholds and the console
# device itself are not settable).
SETTABLE = settable_keys()
RESTART_DELAY_S = 1.0  # time for the answer to reach the technician before the agent stops
_FIX_NAMES = {1: "no fix", 2: "2D fix", 3: "3D fix"}


def _plain(value: object) -> object:
    """Config values as JSON: read-only mappings as dicts, tuples as lists."""
    if isinstance(value, Mapping | types.MappingProxyType):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value


def toml_text(value: object) -> str:
    """A setting as it is written in TOML (what chain events and the audit log record)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def coerce(value: object, like: object, key: str) -> object:
    """``value`` (text from a typed line, or JSON) as the type of the current setting ``like``."""
    text = str(value).strip().lower()
    if isinstance(like, bool):
        if isinstance(value, bool):
            return value
        if text in ("true", "on", "yes", "1"):
            return True
        if text in ("false", "off", "no", "0"):
            return False
        raise BackendError("bad-value", f"{key} is true or false, not {value!r}")
    try:
        if isinstance(like, int):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else int(text)
        if isinstance(like, float):
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value) if isinstance(value, int | float) else float(text)
    except (TypeError, ValueError):
        raise BackendError("bad-value", f"{key} is a number, not {value!r}") from None
    raise BackendError("bad-value", f"{key} cannot be set over the console")


class AgentBackend:
    """Implements :class:`agent.console.backend.ConsoleBackend` for a running ``Agent``.

    ``restart`` stops the agent cleanly (SIGTERM to itself by default: the daemon seals what is
    open and exits; the service manager starts it again). Called from the console thread only.
    """

    def __init__(
        self,
        agent: Agent,
        *,
        config_path: Path,
        ring: LogRing,
        trust: TrustStore,
        restart: Callable[[], None] | None = None,
    ) -> None:
        self._agent = agent
        self._config_path = config_path
        self._ring = ring
        self._trust = trust
        self._restart = restart or (lambda: os.kill(os.getpid(), signal.SIGTERM))
        self._started_ns = agent.clock.monotonic_ns()

    @property
    def device_id(self) -> str:
        return self._agent.config.device.id

    # -- reads -------------------------------------------------------------------------------------

    def version(self) -> dict[str, Any]:
        running = self._agent.config
        saved = self._saved_config()
        pending = False
        if saved is not None:
            # `bodycam run --console DEVICE` overrides the file's device: that is no pending change
            same_device = dataclasses.replace(saved.console, device=running.console.device)
            pending = dataclasses.replace(saved, console=same_device).digest != running.digest
        return {"device_id": self.device_id, "firmware": __version__, "format_version": FORMAT_VERSION,
                "config_sha256": running.digest, "saved_config_sha256": None if saved is None else saved.digest,
                "restart_pending": pending, "python": platform.python_version()}

    def status(self) -> dict[str, Any]:
        st = self._agent.status()
        storage = st.get("storage") or {}
        power = st.get("power")
        battery = None if power is None else (
            {"error": power["error"]} if "error" in power else {"pct": power.get("battery_pct"),
                                                                 "charging": power.get("charging")})
        gnss = st.get("gnss")
        return {
            "device_id": self.device_id,
            "state": st.get("state"),
            "recording_id": st.get("recording_id"),
            "stealth": st.get("stealth"),
            "muted": st.get("muted"),
            "uptime_s": round((self._agent.clock.monotonic_ns() - self._started_ns) / 1e9, 1),
            "storage": {k: storage.get(k) for k in ("level", "free_bytes", "hours_left", "alarm")},
            "battery": battery,
            "time": st.get("time"),
            "gnss": None if gnss is None else {"fix": _FIX_NAMES.get(gnss.get("mode"), "unknown"),
                                               "h_acc_m": gnss.get("h_acc_m")},
            "sync": self._sync_summary(),
            "frames": st.get("frames"),
            "dropped": st.get("dropped"),
            "lost_to_storage": st.get("lost_to_storage"),
            "chain": st.get("chain"),
            "faults": self._faults(st),
        }

    def _faults(self, st: dict[str, Any]) -> list[str]:
        faults = []
        for name, ws in (st.get("sensors") or {}).items():
            if ws.get("state") not in ("running", "starting"):
                faults.append(f"sensor {name}: {ws.get('state')}: {ws.get('last_error') or '-'}")
        if st.get("last_error"):
            faults.append(f"recorder: {st['last_error']}")
        if not self._agent.recorder.alive:
            faults.append("recorder: thread not running")
        alarm = (st.get("storage") or {}).get("alarm")
        if alarm:
            faults.append(f"storage: {alarm}")
        sync = self._sync_summary()
        if sync.get("alarm"):
            faults.append(f"sync: {sync['alarm']}")
        power = st.get("power") or {}
        if "error" in power:
            faults.append(f"battery: {power['error']}")
        return faults

    def sensors(self) -> list[dict[str, Any]]:
        rec = self._agent.recorder.status()
        dropped = rec.get("dropped") or {}
        out = []
        for w in self._agent.workers:
            ws = w.status()
            dev = ws.get("device")
            dev = dev if isinstance(dev, dict) else {}
            temp_c = dev.get("temperature_c")
            if isinstance(dev.get("fpa_temp_ck"), int):
                temp_c = round(dev["fpa_temp_ck"] / 100 - 273.15, 2)
            out.append({
                "name": w.sensor,
                "driver": dev.get("driver") or self._driver_of(w.sensor),
                "state": ws.get("state"),
                "rate_hz_configured": dev.get("rate_hz"),
                "rate_hz_achieved": dev.get("achieved_rate_hz"),
                "samples": ws.get("items"),
                "dropped": dropped.get(w.sensor, dev.get("dropped")),
                "restarts": ws.get("restarts"),
                "last_error": ws.get("last_error") or dev.get("last_error"),
                "temperature_c": temp_c,
            })
        return out

    def _driver_of(self, sensor: str) -> str:
        cfg = self._agent.config
        if sensor in cfg.cameras:
            return cfg.cameras[sensor].driver
        section = {"audio": "microphone"}.get(sensor, sensor)
        sc = getattr(cfg, section, None)
        return str(getattr(sc, "driver", "?"))

    def selftest(self) -> list[SelftestItem]:
        a = self._agent
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
        return self._ring.tail(n)

    def time_info(self) -> dict[str, Any]:
        clock = self._agent.clock
        q = clock.quality()
        t = self._agent.recorder.status().get("time") or {}
        return {"utc_ns": clock.utc_ns(), "source": q.source.value, "synced": q.synced,
                "uncertainty_ms": None if q.uncertainty_ns is None else q.uncertainty_ns / 1e6,
                "gnss_offset_ms": t.get("gnss_offset_ms"), "monotonic_s": round(clock.monotonic_ns() / 1e9, 3)}

    def gps(self) -> dict[str, Any]:
        gnss = self._agent.recorder.status().get("gnss")
        worker = next((w for w in self._agent.workers if w.sensor == "gnss"), None)
        receiver: dict[str, Any] | None = None
        if worker is not None:
            ws = worker.status()
            dev = ws.get("device")
            receiver = {"state": ws.get("state"), "reports": ws.get("items"), "last_error": ws.get("last_error")}
            if isinstance(dev, dict):  # quality only: a driver's status never carries the position here
                receiver.update({k: v for k, v in dev.items()
                                 if not any(p in k for p in ("lat", "lon", "alt", "position"))})
        fix = None if gnss is None else {
            "mode": _FIX_NAMES.get(gnss.get("mode"), "unknown"), "h_acc_m": gnss.get("h_acc_m"),
            "lat_deg": gnss.get("lat_deg"), "lon_deg": gnss.get("lon_deg")}
        return {"enabled": worker is not None, "fix": fix, "receiver": receiver}

    def storage(self) -> dict[str, Any]:
        st = dict(self._agent.storage.get_status())
        st["index"] = self._agent.store.stats()
        return st

    def sync_status(self) -> dict[str, Any]:
        return self._sync_summary(full=True)

    def _sync_summary(self, full: bool = False) -> dict[str, Any]:
        worker = getattr(self._agent, "sync", None)
        if worker is not None and hasattr(worker, "get_status"):
            st = worker.get_status()
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
        pending = self._agent.store.pending_upload()
        return {"state": "off" if not self._agent.config.hq.url else "not running", "connected": False,
                "backlog_entries": len(pending),
                "backlog_bytes": sum(max(0, s.size_bytes - s.upload_offset) for s in pending),
                "last_receipt_seq": None, "last_receipt_utc_ns": None, "alarm": None}

    def key_fingerprints(self) -> dict[str, Any]:
        a = self._agent
        keys: list[dict[str, Any]] = [{"role": "device", "name": self.device_id,
                                       "fingerprint": fingerprint(public_der(a.keystore.public_key()))}]
        hq_path = resolve_path(a.data_dir, a.config.hq.public_key)
        for role, loader in (("hq-encryption", load_hq_public), ("hq-receipts", load_receipt_public)):
            try:
                keys.append({"role": role, "name": None, "fingerprint": fingerprint(public_der(loader(hq_path)))})
            except KeyFileError as exc:
                keys.append({"role": role, "name": None, "fingerprint": None, "error": str(exc)})
        for fp, (name, _key) in sorted(self._trust.listed.items()):
            keys.append({"role": "technician", "name": name, "fingerprint": fp})
        if self._trust.ca is not None:
            keys.append({"role": "technician-ca", "name": None, "fingerprint": key_fingerprint(self._trust.ca)})
        return {"keys": keys}

    # -- changes -----------------------------------------------------------------------------------

    def _recorder(self, name: str, actor: str, **args: Any) -> dict[str, Any]:
        try:
            return self._agent.recorder.command(name, actor, **args)
        except CommandError as exc:
            raise BackendError("refused", str(exc)) from None
        except FutureTimeout:
            raise BackendError("unavailable", "the recorder did not answer within 10 s") from None

    def record(self, action: str, actor: str, note: str | None = None) -> dict[str, Any]:
        if action == "start":
            return self._recorder("start", actor, trigger="console")
        if action == "stop":
            return self._recorder("stop", actor)
        if action == "mark":
            return self._recorder("mark", actor, **({"note": note} if note else {}))
        raise BackendError("bad-value", f"record {action!r}: start, stop or mark")

    def sync_now(self, actor: str) -> dict[str, Any]:
        worker = getattr(self._agent, "sync", None)
        if worker is None or not hasattr(worker, "kick"):
            raise BackendError("unavailable", "sync is off on this unit (no hq.url)")
        worker.kick()
        return {"kicked": True}

    def config_get(self, key: str) -> dict[str, Any]:
        saved = self._saved_config()
        if not key:
            return {"settable": [{"key": k, "running": _plain(lookup(self._agent.config, k)),
                                  "saved": None if saved is None else _plain(lookup(saved, k))} for k in SETTABLE]}
        try:
            running = _plain(lookup(self._agent.config, key))
        except KeyError:
            raise BackendError("bad-value", f"no setting {key!r} (`config list` shows the settable ones)") from None
        saved_value = None if saved is None else _plain(lookup(saved, key))
        return {"key": key, "running": running, "saved": saved_value, "settable": key in SETTABLE,
                "note": "changed; applies after `reboot`" if saved_value != running else ""}

    def _saved_config(self) -> Config | None:
        try:
            return load_config(self._config_path)
        except ConfigError as exc:
            log.warning("console: reading %s: %s", self._config_path, exc)
            return None

    def config_set(self, key: str, value: object, actor: str) -> dict[str, Any]:
        if key not in SETTABLE:
            raise BackendError("refused", f"{key} cannot be changed over the console (settable: {', '.join(SETTABLE)})")
        try:
            before_bytes = self._config_path.read_bytes()
            current = load_config(self._config_path)
        except (OSError, ConfigError) as exc:
            raise BackendError("unavailable", f"cannot read the config file: {exc}") from None
        old = lookup(current, key)
        new = coerce(value, old, key)
        try:
            text, checked = set_setting(before_bytes.decode("utf-8"), key, new, "the changed config")
        except (UnicodeDecodeError, ConfigError) as exc:
            raise BackendError("bad-value", str(exc)) from None
        result = {"key": key, "old": _plain(old), "new": _plain(new), "config_sha256": checked.digest,
                  "applies": "after `reboot`"}
        if new == old:
            return {**result, "changed": False}
        mode = self._config_path.stat().st_mode & 0o777
        try:
            atomic_write_bytes(self._config_path, text.encode(), mode=mode)
        except OSError as exc:
            raise BackendError("failed", f"writing the config: {exc}") from None
        try:
            self._recorder("config_changed", actor, key=key, old=toml_text(old), new=toml_text(new),
                           config_sha256=checked.digest)
        except Exception as exc:
            # no chain event, no change: put the old file back so the two never disagree
            atomic_write_bytes(self._config_path, before_bytes, mode=mode)
            raise BackendError("failed", f"the change could not be signed into the chain ({exc}); "
                                         "the config is unchanged") from None
        log.info("console: %s set %s from %s to %s", actor, key, toml_text(old), toml_text(new))
        return {**result, "changed": True}

    def reboot(self, actor: str) -> dict[str, Any]:
        log.warning("console: restart requested by %s", actor)
        timer = threading.Timer(RESTART_DELAY_S, self._restart)
        timer.daemon = True
        timer.start()
        return {"restarting": True, "message": "stopping cleanly (open segments are sealed); "
                                                 "the service manager starts the agent again"}

    def audit(self, actor: str, action: str, target: str, outcome: str, **detail: Any) -> None:
        try:
            self._agent.store.audit(actor, action, target, outcome, **detail)
        except Exception as exc:  # an audit failure is logged loudly, never crashes the console
            log.error("console: cannot audit %s %s by %s: %s", action, outcome, actor, exc)
