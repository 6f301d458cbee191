"""Writing a :class:`~agent.config.model.Config` as canonical TOML (what its digest is taken over)."""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.config.model import Config

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _string(value: str) -> str:
    out = []
    for ch in value:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _string(key)


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, datetime.date | datetime.time):  # datetime is a date subclass
        return value.isoformat()
    if isinstance(value, Mapping):
        items = ", ".join(f"{_key(str(k))} = {toml_value(v)}" for k, v in sorted(value.items()))
        return "{ " + items + " }" if items else "{}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _table(header: str, obj: object) -> list[str]:
    lines = [f"[{header}]"]
    for name in obj.__dataclass_fields__:  # type: ignore[attr-defined]
        lines.append(f"{name} = {toml_value(getattr(obj, name))}")
    return lines + [""]


def render_config(config: Config) -> str:
    """Canonical TOML: fixed section order, every key written, cameras and options sorted.

    ``parse_config(render_config(c)) == c`` for every valid ``c``.
    """
    from agent.config.model import SENSOR_SECTIONS

    lines: list[str] = []
    for name in ("device", "hq", "evidence", "recording"):
        lines += _table(name, getattr(config, name))
    if not config.cameras:
        lines += ["[cameras]", ""]
    for instance, camera in sorted(config.cameras.items()):
        lines += _table(f"cameras.{_key(instance)}", camera)
    for name in (*SENSOR_SECTIONS, "control", "console", "storage", "sync", "live", "background"):
        lines += _table(name, getattr(config, name))
    return "\n".join(lines)
