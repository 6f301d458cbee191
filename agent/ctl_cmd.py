"""``bodycam ctl``: the local client of a running agent (kept light: it imports only the socket code).

Exit codes: 0 done; 1 the agent refused or failed the command; 2 bad usage; 3 no agent listening.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from agent.control import request
from agent.hints import with_sync_hint
from agent.humanize import duration, hours, offset_ms, plural, size, utc
from agent.textsafe import safe_text

COMMANDS = {
    "status": "what the unit is doing: recording, storage, battery, time, sensors, sync (--json: everything)",
    "start": "start recording (the pre-event buffer is kept)",
    "stop": "stop recording; the segment is sealed",
    "mark": "mark this moment, with an optional note (encrypted to headquarters)",
    "stealth": "on|off: LEDs, haptics and buzzer off",
    "mute": "on|off: stop or resume recording sound",
}
# What to tell a person for a refusal the recorder gives in its own words.
_REFUSAL_ADVICE = {
    "already recording": "the unit is already recording; `bodycam ctl stop` ends the recording",
    "not recording": "the unit is not recording; nothing to stop",
}
_FIX_NAMES = {0: "unknown", 1: "no fix", 2: "2D fix", 3: "3D fix"}


def cmd_ctl(args: argparse.Namespace) -> int:
    sock = args.socket or args.data_dir / "ctl.sock"
    payload: dict[str, Any] = {}
    if args.command in ("stealth", "mute"):
        if args.value not in ("on", "off"):
            print(f"bodycam ctl: {args.command} takes on or off (bodycam ctl {args.command} on)", file=sys.stderr)
            return 2
        payload["on"] = args.value == "on"
    elif args.command == "mark" and args.value:
        payload["note"] = args.value
    try:
        reply = request(sock, args.command, payload)
    except (FileNotFoundError, ConnectionRefusedError):
        print(f"bodycam ctl: no agent is listening on {sock} (is 'bodycam run' running? "
              "give its data dir with --data-dir)", file=sys.stderr)
        return 3
    except PermissionError:
        print(f"bodycam ctl: permission denied on {sock} (run as the agent's user)", file=sys.stderr)
        return 3
    if args.json:  # json.dumps escapes every control: safe on a terminal
        print(json.dumps(reply, indent=2, sort_keys=True))
    elif reply["ok"] and args.command == "status":
        print(safe_text(summary(reply["data"]), multiline=True))
    elif reply["ok"]:
        print(f"{args.command}: ok{_details(reply.get('data') or {})}")
    if not reply["ok"]:
        print(safe_text(f"bodycam ctl: {refusal(args.command, reply['error'])}"), file=sys.stderr)
        return 1
    return 0


def refusal(command: str, error: dict[str, Any]) -> str:
    """One line: what the agent refused, why, and what to do."""
    message, code = str(error.get("message") or ""), error.get("code")
    if message.startswith("TimeoutError"):
        return (f"{command} failed: the recorder did not answer in time (it may be busy sealing a segment); "
                "check `bodycam ctl status` in a few seconds, and the agent's log")
    if code == "failed":
        return f"{command} failed inside the agent: {message or 'no reason given'}; see the agent's log"
    return f"{command} refused: {_REFUSAL_ADVICE.get(message, message or 'no reason given')}"


def _details(data: dict[str, Any]) -> str:
    parts = [f"{k.replace('_', ' ')} {v}" for k, v in sorted(data.items()) if v is not None]
    return f" ({', '.join(parts)})" if parts else ""


def summary(st: dict[str, Any]) -> str:
    """``bodycam ctl status`` for a person: one line per subject; ``--json`` has every field."""
    storage = st.get("storage") or {}
    index = storage.get("index") or {}
    seg = st.get("segment") or {}
    recording = str(st.get("state"))
    if seg:
        recording += (f", segment {duration(seg.get('started_s_ago'))} old ({size(seg.get('bytes'))}, "
                      f"{plural(seg.get('marks') or 0, 'mark')})")
    modes = [m for m in ("stealth", "muted") if st.get(m)]
    rows: list[tuple[str, str]] = [
        ("unit", f"{st.get('device_id')} (firmware {st.get('firmware')})"),
        ("recording", recording + (f"; {', '.join(modes)}" if modes else "")),
        ("storage", f"{storage.get('level')}, {size(storage.get('free_bytes'))} free, "
                    f"{hours(storage.get('hours_left'))} of recording left; "
                    f"{plural(index.get('count') or 0, 'entry', 'entries')} held ({size(index.get('bytes'))})"),
        ("battery", _battery(st.get("power"))),
        ("time", _time(st.get("time") or {})),
        ("gnss", _gnss(st.get("gnss"))),
        ("sensors", ", ".join(f"{name} {w.get('state')}" for name, w in sorted((st.get("sensors") or {}).items()))
         or "none"),
        ("dropped", ", ".join(f"{k} {v}" for k, v in sorted((st.get("dropped") or {}).items()) if v) or "none"),
        ("sync", _sync(st.get("sync") or {})),
    ]
    if st.get("background") is not None:
        rows.append(("background", _background(st["background"])))
    problems = [f"storage: {storage['alarm']}"] if storage.get("alarm") else []
    problems += [f"recorder: {st['last_error']}"] if st.get("last_error") else []
    problems += [f"sensor {name}: {w.get('last_error')}" for name, w in sorted((st.get("sensors") or {}).items())
                 if w.get("state") not in ("running", "starting")]
    rows.append(("problems", "; ".join(problems) or "none"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows) + "\n(bodycam ctl status --json: every field)"


def _battery(power: dict[str, Any] | None) -> str:
    if not power:
        return "none"
    if "error" in power:
        return f"unreadable: {power['error']}"
    return f"{power.get('battery_pct')} %{' (charging)' if power.get('charging') else ''}"


def _time(t: dict[str, Any]) -> str:
    text = f"{t.get('source')}, {'synced' if t.get('synced') else 'NOT synced'}"
    return text + ("" if t.get("gnss_offset_ms") is None else f", {offset_ms(t['gnss_offset_ms'], 'GNSS')}")


def _gnss(fix: dict[str, Any] | None) -> str:
    if not fix or fix.get("mode", 0) < 2:
        return "no fix"
    acc = fix.get("h_acc_m")
    return _FIX_NAMES.get(fix["mode"], "fix") + ("" if acc is None else f", accuracy {acc:.1f} m")


def _background(bg: dict[str, Any]) -> str:
    """Record after the fact: what it records, and how much of its ring the unit holds."""
    ring = bg.get("ring") or {}
    oldest, newest = ring.get("oldest_utc_ns"), ring.get("newest_utc_ns")
    held = hours((newest - oldest) / 3.6e12) if oldest is not None and newest is not None else hours(0.0)
    text = (f"{bg.get('camera')} at {bg.get('width')}x{bg.get('height')}, {bg.get('fps')} fps"
            f"{', with audio' if bg.get('audio') else ''}; ring {held} of {hours(bg.get('keep_h'))} "
            f"({plural(ring.get('entries') or 0, 'file')}, {size(ring.get('bytes'))}), from {utc(oldest)}")
    if bg.get("last_error"):
        text += f"; last error: {bg['last_error']}"
    return text


def _sync(sync: dict[str, Any]) -> str:
    if sync.get("enabled") is False:
        problem = sync.get("problem")
        return f"off: {problem}" if problem else "off (no hq.url in the config)"
    backlog = sync.get("backlog") or {}
    receipt = sync.get("last_receipt") or {}
    text = (f"{sync.get('state')}, {'connected' if sync.get('connected') else 'not connected'}, backlog "
            f"{plural(backlog.get('entries') or 0, 'entry', 'entries')} ({size(backlog.get('bytes'))}), "
            f"last receipt {utc(receipt.get('utc_ns'))}")
    for what in ("alarm", "last_error"):
        message = (sync.get(what) or {}).get("message")
        if message:
            text += f"; {what.replace('_', ' ')}: {with_sync_hint(message)}"
    return text
