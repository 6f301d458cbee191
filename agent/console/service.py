"""Starting and stopping the console for a running agent, from its ``[console]`` config.

:func:`start_console` never raises: a console that cannot start (a technician key file that
cannot be read, pyserial missing) is logged and the unit records on without it.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.config import ConsoleConfig, resolve_path
from agent.console.auth import Authenticator, Lockout, TrustStore, key_fingerprint, parse_public_pems
from agent.console.logring import LogRing
from agent.console.server import ConsoleServer
from agent.console.session import Session
from agent.fsutil import atomic_write_bytes
from agent.unitapi.api import UnitApi
from hal.clock import Clock

log = logging.getLogger(__name__)


def _pem_source(entry: str, data_dir: Path) -> tuple[bytes, str]:
    """(PEM bytes, a name for the audit log) of one configured key: inline PEM or a file."""
    if entry.lstrip().startswith("-----BEGIN"):
        return entry.encode(), ""
    path = resolve_path(data_dir, entry)
    name = path.name.removesuffix(".pem").removesuffix(".pub")
    return path.read_bytes(), name


def load_trust(cfg: ConsoleConfig, data_dir: Path, device_id: str) -> TrustStore:
    """The technician keys and CA the config names. A key that cannot be loaded is logged and
    left out (the others still work); it never stops the unit."""
    listed: dict[str, tuple[str, ed25519.Ed25519PublicKey]] = {}
    for i, entry in enumerate(cfg.technician_keys):
        try:
            data, name = _pem_source(entry, data_dir)
            for key in parse_public_pems(data):
                fp = key_fingerprint(key)
                listed[fp] = (name or f"technician-{fp[:8]}", key)
        except (OSError, ValueError) as exc:
            log.error("console: technician_keys[%d] is not usable (%s); it is ignored", i, exc)
    ca = None
    if cfg.technician_ca:
        try:
            ca = parse_public_pems(_pem_source(cfg.technician_ca, data_dir)[0])[0]
        except (OSError, ValueError) as exc:
            log.error("console: technician_ca is not usable (%s); certificates are refused", exc)
    if not listed and ca is None:
        log.warning("console: no technician key is trusted: read-only commands only")
    return TrustStore(device_id, listed, ca)


LOCKOUT_FILE = "console-lockout.json"


class LockoutFile:
    """The console's login lockout under the data dir, so that restarting the agent does not
    clear it. Written atomically at every change; a file that cannot be read or written is
    logged, and the console goes on with what it has in memory."""

    def __init__(self, path: Path, clock: Clock) -> None:
        self.path = path
        self._clock = clock

    def load_into(self, lockout: Lockout) -> None:
        try:
            record = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.error("console: reading the lockout state %s: %s; starting with none", self.path, exc)
            return
        try:
            lockout.restore(record, self._clock.monotonic_ns(), self._clock.utc_ns())
        except ValueError as exc:
            log.error("console: the lockout state in %s is not usable (%s); starting with none", self.path, exc)
            return
        if lockout.failures:
            log.warning("console: %d failed logins in a row before the restart; logins refused for %.0f s",
                        lockout.failures, lockout.remaining_ns(self._clock.monotonic_ns()) / 1e9)

    def save(self, lockout: Lockout, now_ns: int) -> None:
        data = json.dumps(lockout.to_record(now_ns, self._clock.utc_ns()), sort_keys=True).encode()
        try:
            atomic_write_bytes(self.path, data)
        except OSError as exc:
            log.error("console: saving the lockout state: %s; it lasts until the agent stops", exc)


@dataclass
class ConsoleService:
    """A started console: its server thread and the log ring it installed."""

    server: ConsoleServer
    ring: LogRing

    def close(self) -> None:
        self.server.close()
        logging.getLogger().removeHandler(self.ring)


def start_console(unit: UnitApi) -> ConsoleService | None:
    """Serve the console on the unit's ``[console] device`` (None when it is empty or fails).

    ``unit`` is the unit API the daemon built; its ``restart`` is what `reboot` calls, one
    second after answering.
    """
    parts = unit.parts
    cfg = parts.config.console
    if not cfg.device:
        return None
    ring = LogRing()
    try:
        logging.getLogger().addHandler(ring)
        trust = load_trust(cfg, parts.data_dir, parts.config.device.id)
        backend = unit.for_console(ring, trust)
        lockout = Lockout(cfg.lockout_after, round(cfg.lockout_base_s * 1e9), round(cfg.lockout_max_s * 1e9))
        saved = LockoutFile(parts.data_dir / LOCKOUT_FILE, parts.clock)
        saved.load_into(lockout)
        session = Session(backend, Authenticator(trust, lockout, saved.save), random_bytes=os.urandom,
                          utc_ns=parts.clock.utc_ns,
                          login_required_for_read=cfg.login_required_for_read,
                          session_idle_ns=round(cfg.session_idle_s * 1e9))
        server = ConsoleServer(cfg.device, cfg.baud, session, parts.clock)
        server.start()
    except Exception:
        logging.getLogger().removeHandler(ring)
        log.exception("console: not started; the unit records without it")
        return None
    return ConsoleService(server, ring)
