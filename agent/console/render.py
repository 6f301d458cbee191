"""Human-readable console output: short aligned tables and key-value blocks. Pure.

Used by the unit for typed lines and by ``bodycam diag`` for what it prints, so a technician
sees the same thing on a bare terminal and through the client. Lines end with ``\\n`` here; the
console turns them into CRLF for the wire.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from agent.humanize import duration, hours, millis, offset_ms, plural, size, utc

MAX_CELL = 48


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Columns aligned on the widest cell; cells longer than MAX_CELL are cut with an ellipsis,
    except in the last column, where nothing follows and the text may run on."""
    last = len(headers) - 1
    cells = [[_cell(c, limit=200 if i == last else MAX_CELL) for i, c in enumerate(row)] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], len(c))
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def pairs(items: Sequence[tuple[str, object]]) -> str:
    width = max((len(k) for k, _ in items), default=0)
    return "\n".join(f"{k.ljust(width)}  {_cell(v, limit=200)}".rstrip() for k, v in items)


def _cell(value: object, limit: int = MAX_CELL) -> str:
    text = "-" if value is None else str(value)
    text = text.replace("\r", " ").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def num(value: object, digits: int = 1) -> str:
    """A measurement as people read it: 26.3, not 26.273; "-" when unknown."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-"
    return f"{value:.{digits}f}"


def _flatten(data: object, prefix: str = "") -> list[tuple[str, object]]:
    if isinstance(data, dict):
        out: list[tuple[str, object]] = []
        for k, v in data.items():
            out += _flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out or [(prefix, "-")]
    if isinstance(data, list) and data and all(isinstance(x, dict) for x in data):
        return [(f"{prefix}[{i}]", ", ".join(f"{k}={v}" for k, v in x.items())) for i, x in enumerate(data)]
    return [(prefix, ", ".join(map(str, data)) if isinstance(data, list) else data)]


def generic(data: dict[str, Any]) -> str:
    return pairs(_flatten(data)) if data else "ok"


# -- per command ---------------------------------------------------------------------------------


def _help(d: dict[str, Any]) -> str:
    who = f"logged in as {d['logged_in_as']}" if d.get("logged_in_as") else "not logged in"
    rows = [(c["usage"] + (" *" if c["access"] == "change" else " (*)" if c["access"] == "mixed" else ""),
             c["summary"]) for c in d["commands"]]
    width = max(len(u) for u, _ in rows)
    body = "\n".join(f"  {u.ljust(width)}  {s}" for u, s in rows)
    return (f"bodycam console, unit {d.get('device_id')} ({who})\n{body}\n"
            "* needs a technician login ((*): only `sync now` and `config set`);\n"
            "  bodycam diag --key logs in for you")


def _status(d: dict[str, Any]) -> str:
    st, sync, t = d.get("storage") or {}, d.get("sync") or {}, d.get("time") or {}
    battery = d.get("battery")
    gnss = d.get("gnss")
    faults = d.get("faults") or []
    offset = t.get("gnss_offset_ms")
    fixed = gnss and gnss.get("fix") not in (None, "no fix", "unknown")
    items: list[tuple[str, object]] = [
        ("unit", d.get("device_id")),
        ("recording", d.get("state")),
        ("uptime", duration(d.get("uptime_s"))),
        ("storage", f"{st.get('level')}, {size(st.get('free_bytes'))} free, "
                    f"{hours(st.get('hours_left'))} of recording left"),
        ("battery", "none" if not battery else battery.get("error") or
         f"{num(battery.get('pct'), 0)} %{' (charging)' if battery.get('charging') else ''}"),
        ("time", f"{t.get('source')}, {'synced' if t.get('synced') else 'NOT synced'}"
                 + ("" if offset is None else f", {offset_ms(offset, 'GNSS')}")),
        ("gnss", f"{gnss.get('fix')}, accuracy {num(gnss.get('h_acc_m'))} m" if gnss and fixed else "no fix"),
        ("sync", f"{sync.get('state')}, backlog {plural(sync.get('backlog_entries') or 0, 'entry', 'entries')} "
                 f"({size(sync.get('backlog_bytes', 0))}), last receipt {utc(sync.get('last_receipt_utc_ns'))}"),
        ("dropped", ", ".join(f"{k} {v}" for k, v in (d.get("dropped") or {}).items()) or "-"),
        ("faults", "none" if not faults else faults[0]),
    ]
    items += [("", f) for f in faults[1:]]
    return pairs(items)


def _sensors(d: dict[str, Any]) -> str:
    rows = [(s["name"], s.get("driver"), s.get("state"),
             f"{num(s.get('rate_hz_achieved'))}/{num(s.get('rate_hz_configured'))}",
             s.get("dropped"), "-" if s.get("temperature_c") is None else f"{s['temperature_c']} °C",
             s.get("last_error")) for s in d["sensors"]]
    return table(("sensor", "driver", "state", "rate Hz", "dropped", "temp", "last error"), rows)


def _selftest(d: dict[str, Any]) -> str:
    rows = [(i["name"], i["result"].upper(), i["detail"]) for i in d["items"]]
    failed = [i["name"] for i in d["items"] if i["result"] == "fail"]
    tail = f"VERDICT: {d['verdict'].upper()}" + (f" ({', '.join(failed)} failed)" if failed else "")
    return table(("check", "result", "detail"), rows) + "\n" + tail


def _log(d: dict[str, Any]) -> str:
    return "\n".join(d["lines"]) or "(no log lines yet)"


def _keys(d: dict[str, Any]) -> str:
    rows = [(k.get("role"), k.get("name") or "-", k.get("fingerprint")) for k in d.get("keys", [])]
    return table(("role", "name", "fingerprint (sha-256 of the public key)"), rows)


def _config(d: dict[str, Any]) -> str:
    if "settable" in d and isinstance(d["settable"], list):
        rows = [(s["key"], s["running"], s["saved"]) for s in d["settable"]]
        return table(("key", "running", "saved"), rows) + "\nconfig set KEY VALUE changes one (after a login)"
    return generic(d)


def _login(d: dict[str, Any]) -> str:
    if "nonce" in d:
        return (f"challenge for unit {d['device_id']}: {d['nonce']}\n"
                "answer with: login PUBLIC_KEY_HEX SIGNATURE_HEX [CERT] (bodycam diag --key does it for you)")
    return f"logged in as {d.get('technician')} (key {str(d.get('fingerprint'))[:16]}, {d.get('via')})"


def _storage(d: dict[str, Any]) -> str:
    index = d.get("index") or {}
    reserve = d.get("reserve") or {}
    items: list[tuple[str, object]] = [
        ("level", d.get("level") if not d.get("alarm") else f"{d.get('level')}: {d.get('alarm')}"),
        ("free", size(d.get("free_bytes"))),
        ("recording left", hours(d.get("hours_left"))),
        ("recording rate", f"{size(d.get('bytes_per_second'))}/s"),
        ("keep synced for", duration(d.get("keep_acknowledged_s"))),
        ("evidence held", f"{plural(index.get('count') or 0, 'entry', 'entries')}, {size(index.get('bytes'))}"),
        ("last pass", utc(d.get("last_pass_utc_ns"))),
        ("freed since start",
         f"{plural(d.get('deleted_files_total') or 0, 'file')}, {size(d.get('deleted_bytes_total', 0))}"),
        ("last error", d.get("last_error") or "none"),
    ]
    if reserve:
        items.append(("reserve", generic(reserve).replace("\n", "; ")))
    return pairs(items)


def _time(d: dict[str, Any]) -> str:
    uncertainty = d.get("uncertainty_ms")
    return pairs([
        ("utc", utc(d.get("utc_ns"))),
        ("source", f"{d.get('source')}, {'synced' if d.get('synced') else 'NOT synced'}"),
        ("uncertainty", "-" if uncertainty is None else f"± {millis(uncertainty)}"),
        ("gnss", offset_ms(d.get("gnss_offset_ms"), "GNSS")),
        ("uptime", duration(d.get("monotonic_s"))),
    ])


RENDERERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "storage": _storage, "time": _time,
    "help": _help, "status": _status, "sensors": _sensors, "selftest": _selftest, "log": _log,
    "keys": _keys, "config": _config, "login": _login,
}


def render(cmd: str, data: dict[str, Any]) -> str:
    """The text a person sees for ``cmd``'s answer; unknown shapes fall back to key-value lines."""
    fn = RENDERERS.get(cmd, generic)
    try:
        return fn(data)
    except (KeyError, TypeError, ValueError, AttributeError):
        return generic(data)


def render_error(code: str, message: str) -> str:
    return f"error ({code}): {message}"
