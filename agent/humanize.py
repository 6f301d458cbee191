"""Numbers as people read them: sizes, durations, clock offsets, counted nouns. Pure.

Shared by every human-facing output (``bodycam ctl``, ``bodycam diag``, the console, ``verify``),
so the same figure reads the same everywhere. ``--json`` output keeps the raw numbers.
"""

from __future__ import annotations

import datetime

_SIZE_UNITS = ("B", "KB", "MB", "GB", "TB")
_MINUTE_S, _HOUR_S, _DAY_S = 60, 3600, 86400


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def size(n_bytes: object) -> str:
    """``4.2 GB``; decimal units, as disks are sold; "?" when unknown."""
    if not _is_number(n_bytes):
        return "?"
    value = float(n_bytes)  # type: ignore[arg-type]
    for unit in _SIZE_UNITS:
        if abs(value) < 1000 or unit == _SIZE_UNITS[-1]:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return "?"


def duration(seconds: object) -> str:
    """``4.5 s``, ``42 s``, ``17 min``, ``3 h 05 min``, ``12 days 4 h``; "?" when unknown."""
    if not _is_number(seconds):
        return "?"
    value = abs(float(seconds))  # type: ignore[arg-type]
    s = int(value)
    if s < 10 and value != s:
        return f"{value:.1f} s"
    if s < 2 * _MINUTE_S:
        return f"{s} s"
    if s < 2 * _HOUR_S:
        return f"{s // _MINUTE_S} min"
    if s < 2 * _DAY_S:
        return f"{s // _HOUR_S} h {s % _HOUR_S // _MINUTE_S:02d} min"
    return f"{s // _DAY_S} days {s % _DAY_S // _HOUR_S} h"


def hours(value_h: object) -> str:
    """A figure kept in hours (``storage.hours_left``) as a duration: ``36 s``, not ``0.01 h``."""
    return duration(value_h * 3600) if _is_number(value_h) else "?"  # type: ignore[operator]


def millis(value_ms: object) -> str:
    """``12 ms`` below a second, a duration above: ``4.5 s``, ``932 days 6 h``; "?" when unknown."""
    if not _is_number(value_ms):
        return "?"
    ms = abs(float(value_ms))  # type: ignore[arg-type]
    return f"{ms:.0f} ms" if ms < 1000 else duration(ms / 1000)


def offset_ms(value_ms: object, reference: str) -> str:
    """A clock's offset to a reference: ``12 ms ahead of GNSS``, ``3 days 2 h behind GNSS``."""
    if not _is_number(value_ms):
        return f"offset to {reference} unknown"
    ms = float(value_ms)  # type: ignore[arg-type]
    if abs(ms) < 0.5:
        return f"in step with {reference}"
    side = "ahead of" if ms > 0 else "behind"
    return f"{millis(ms)} {side} {reference}"


def utc(ns: object) -> str:
    """``2025-03-01 14:02:11 UTC`` from nanoseconds since the epoch; "-" when unknown."""
    if not isinstance(ns, int) or isinstance(ns, bool):
        return "-"
    return datetime.datetime.fromtimestamp(ns / 1e9, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def plural(count: int, noun: str, plural_noun: str | None = None) -> str:
    """``1 file``, ``2 files``, ``0 entries`` (give the plural when it is not noun + s)."""
    return f"{count} {noun if count == 1 else plural_noun or noun + 's'}"
