"""The heartbeat's body: the unit's status, made canonical, signed again by the device key inside."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from agent.evidence.receipt import make_heartbeat
from hal.keystore import KeyStore


def canonical_value(value: Any) -> Any:
    """``value`` with what canonical JSON cannot hold made representable: floats become integers
    when whole and decimal strings otherwise (``87.5`` -> ``"87.5"``), tuples become lists, other
    objects their ``str``. Canonical JSON has no floats so that every encoder agrees on the bytes."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return int(value) if value.is_integer() else format(value, ".6g")
    if isinstance(value, Mapping):
        return {str(k): canonical_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [canonical_value(v) for v in value]
    return str(value)


def heartbeat_body(status: Mapping[str, Any], signer: KeyStore) -> bytes:
    """The body of ``POST /v1/heartbeat`` for ``status`` (see :func:`agent.evidence.receipt.make_heartbeat`)."""
    return make_heartbeat(canonical_value(status), signer)


def unit_status(recorder: Mapping[str, Any], storage: Mapping[str, Any],
                power: Mapping[str, Any] | None, *, firmware: str | None = None, config_sha256: str | None = None,
                sensors: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """What a heartbeat says about the unit, from the daemon's status pieces: battery, storage,
    recording state, the last GNSS fix, the clock's quality, and (since 1.4) the firmware, the
    config digest and each sensor's state with its last error (the worker adds the sync backlog
    and chain head). Headquarters raises its alerts from these (docs/sync-protocol.md, Heartbeat)."""
    status: dict[str, Any] = {
        "battery": dict(power) if power is not None else None,
        "storage": {k: storage.get(k) for k in ("level", "alarm", "free_bytes", "hours_left")},
        "recording": {k: recorder.get(k) for k in ("state", "recording_id", "stealth", "muted", "storage_level")},
        "gnss": recorder.get("gnss"),
        "time": recorder.get("time"),
    }
    if firmware is not None:
        status["firmware"] = firmware
    if config_sha256 is not None:
        status["config_sha256"] = config_sha256
    if sensors is not None:
        status["sensors"] = {name: {"state": ws.get("state"), "last_error": _clip(ws.get("last_error"))}
                             for name, ws in sensors.items()}
    return status


def _clip(text: Any, limit: int = 200) -> str | None:
    """A sensor's last error as a short string (the heartbeat is capped at 64 KiB)."""
    return None if text is None else str(text)[:limit]
