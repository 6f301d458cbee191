"""Canonical JSON: the byte form that is hashed and signed (docs/evidence-format.md, section 3).

It is RFC 8785 (JCS) restricted to objects with ASCII keys, strings, integers, booleans, null
and arrays -- with one deliberate difference: integers are written as exact decimal integers of
any magnitude in -(2**63-1) .. 2**63-1. JCS serializes every number as an IEEE-754 double, so for
an integer beyond 2**53 (every nanosecond UTC timestamp) a JCS encoder writes a rounded value or
refuses; its bytes differ from these and the signature does not verify. Below 2**53 in magnitude
the two agree byte for byte. A reader must parse integers exactly, never through doubles: this
module's ``loads`` does (Python integers are exact) and rejects any fraction or exponent.
Python's json module with sorted keys, no whitespace and ``ensure_ascii=False`` writes this form.
"""

from __future__ import annotations

import json
from typing import Any

MAX_INT = 2**63 - 1  # exact integers only; beyond JCS's 2**53 (see the module docstring)


class CanonicalError(ValueError):
    """A value that has no canonical form, or bytes that are not canonical."""


MAX_DEPTH = 32


def _check(value: Any, path: str, depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise CanonicalError(f"{path}: nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, bool | str):
        return
    if isinstance(value, int):
        if not -MAX_INT <= value <= MAX_INT:
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
