"""The heartbeat's body: the unit's status, canonical JSON, signed again by the device key inside."""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from typing import Any

from agent.evidence import canonical
from hal.keystore import KeyStore

CTX_HEARTBEAT = b"bodycam/v1/heartbeat\x00"


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
    """``{"status": ..., "sig": b64(sign(CTX_HEARTBEAT || canonical(status)))}`` as canonical bytes."""
    clean = canonical_value(status)
    sig = signer.sign(CTX_HEARTBEAT + canonical.dumps(clean))
    return canonical.dumps({"status": clean, "sig": base64.b64encode(sig).decode()})
