"""Canonical JSON: the byte form that is hashed and signed.

The encoding is RFC 8785 (JCS) restricted to what the format uses: objects with ASCII keys,
strings, integers, booleans, null and arrays -- no floating point numbers anywhere, so every
encoder agrees on the bytes. Python's json module with sorted keys, no whitespace and
``ensure_ascii=False`` produces exactly JCS for that subset.
"""

from __future__ import annotations

import json
from typing import Any

MAX_SAFE_INT = 2**63 - 1


class CanonicalError(ValueError):
    """A value that has no canonical form, or bytes that are not canonical."""


MAX_DEPTH = 32


def _check(value: Any, path: str, depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise CanonicalError(f"{path}: nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, bool | str):
        return
    if isinstance(value, int):
        if not -MAX_SAFE_INT <= value <= MAX_SAFE_INT:
            raise CanonicalError(f"{path}: integer out of range")
        return
    if isinstance(value, float):
        raise CanonicalError(f"{path}: floating point numbers are not allowed")
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check(item, f"{path}[{i}]", depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or not key.isascii():
                raise CanonicalError(f"{path}: keys must be ASCII strings")
            _check(item, f"{path}.{key}", depth + 1)
        return
    raise CanonicalError(f"{path}: {type(value).__name__} has no canonical form")


def dumps(value: Any) -> bytes:
    """The canonical bytes of ``value``."""
    _check(value, "$")
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate has no UTF-8 form
        raise CanonicalError(f"string is not valid Unicode: {exc.reason}") from exc


def loads(data: bytes) -> Any:
    """Parse canonical bytes; raise CanonicalError unless ``data`` is exactly canonical."""
    try:
        value = json.loads(data.decode("utf-8"), parse_float=_reject_float, parse_constant=_reject_float)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CanonicalError(f"not JSON: {type(exc).__name__}") from exc
    if dumps(value) != data:
        raise CanonicalError("JSON is not in canonical form")
    return value


def _reject_float(text: str) -> Any:
    raise CanonicalError(f"floating point number {text} is not allowed")
