"""Reading and changing the unit's config from a front-end: version, ``config get`` and ``config set``.

A change is validated by ``agent.config``, written atomically with the operator's comments kept,
and signed into the chain as a ``config-changed`` event by the recorder; it applies at the next
start. The file and the chain never disagree: when signing fails the old file is put back.
"""

from __future__ import annotations

import dataclasses
import logging
import platform
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from agent import __version__
from agent.config import Config, ConfigError, load_config
from agent.config.edit import set_setting
from agent.config.table import lookup, settable_keys
from agent.evidence.format import FORMAT_VERSION
from agent.fsutil import atomic_write_bytes
from agent.unitapi.errors import Refused

log = logging.getLogger(__name__)

# What a technician may change over the console: tuning that cannot weaken the evidence, as
# declared in agent.config (keys, headquarters, drivers, storage thresholds and the console
# device itself are not settable).
SETTABLE = settable_keys()
Sign = Callable[..., dict[str, Any]]


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
        raise Refused("bad-value", f"{key} is true or false, not {value!r}")
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
        raise Refused("bad-value", f"{key} is a number, not {value!r}") from None
    raise Refused("bad-value", f"{key} cannot be set over the console")


class ConfigEditor:
    """The running config, the saved file, and changes to the file. ``sign`` is the recorder
    command path (``UnitApi.recorder_command``) that signs a change into the chain."""

    def __init__(self, running: Config, config_path: Path, sign: Sign) -> None:
        self.running = running
        self.config_path = config_path
        self._sign = sign

    def version(self) -> dict[str, Any]:
        running = self.running
        saved = self.saved()
        pending = False
        if saved is not None:
            # `bodycam run --console DEVICE` overrides the file's device: that is no pending change
            same_device = dataclasses.replace(saved.console, device=running.console.device)
            pending = dataclasses.replace(saved, console=same_device).digest != running.digest
        return {"device_id": running.device.id, "firmware": __version__, "format_version": FORMAT_VERSION,
                "config_sha256": running.digest, "saved_config_sha256": None if saved is None else saved.digest,
                "restart_pending": pending, "python": platform.python_version()}

    def saved(self) -> Config | None:
        try:
            return load_config(self.config_path)
        except ConfigError as exc:
            log.warning("reading %s: %s", self.config_path, exc)
            return None

    def get(self, key: str) -> dict[str, Any]:
        saved = self.saved()
        if not key:
            return {"settable": [{"key": k, "running": _plain(lookup(self.running, k)),
                                  "saved": None if saved is None else _plain(lookup(saved, k))} for k in SETTABLE]}
        try:
            running = _plain(lookup(self.running, key))
        except KeyError:
            raise Refused("bad-value", f"no setting {key!r} (`config list` shows the settable ones)") from None
        saved_value = None if saved is None else _plain(lookup(saved, key))
        return {"key": key, "running": running, "saved": saved_value, "settable": key in SETTABLE,
                "note": "changed; applies after `reboot`" if saved_value != running else ""}

    def set(self, key: str, value: object, actor: str) -> dict[str, Any]:
        if key not in SETTABLE:
            raise Refused("refused", f"{key} cannot be changed over the console (settable: {', '.join(SETTABLE)})")
        try:
            before_bytes = self.config_path.read_bytes()
            current = load_config(self.config_path)
        except (OSError, ConfigError) as exc:
            raise Refused("unavailable", f"cannot read the config file: {exc}") from None
        old = lookup(current, key)
        new = coerce(value, old, key)
        try:
            text, checked = set_setting(before_bytes.decode("utf-8"), key, new, "the changed config")
        except (UnicodeDecodeError, ConfigError) as exc:
            raise Refused("bad-value", str(exc)) from None
        result = {"key": key, "old": _plain(old), "new": _plain(new), "config_sha256": checked.digest,
                  "applies": "after `reboot`"}
        if new == old:
            return {**result, "changed": False}
        mode = self.config_path.stat().st_mode & 0o777
        try:
            atomic_write_bytes(self.config_path, text.encode(), mode=mode)
        except OSError as exc:
            raise Refused("failed", f"writing the config: {exc}") from None
        try:
            self._sign("config_changed", actor, key=key, old=toml_text(old), new=toml_text(new),
                       config_sha256=checked.digest)
        except Exception as exc:
            # no chain event, no change: put the old file back so the two never disagree
            atomic_write_bytes(self.config_path, before_bytes, mode=mode)
            raise Refused("failed", f"the change could not be signed into the chain ({exc}); "
                                    "the config is unchanged") from None
        log.info("%s set %s from %s to %s", actor, key, toml_text(old), toml_text(new))
        return {**result, "changed": True}
