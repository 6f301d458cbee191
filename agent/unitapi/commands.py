"""The unit's one command table: names, arguments, who may run them, and their handlers. Pure.

Both front-ends dispatch through it: the console (``agent.console.session``) and the control
socket (:func:`ctl_handler`); each row says which front-ends offer it. A request is a command
name and arguments, either positional words (a typed line, or a JSON ``"args"`` array) or named
(a JSON ``"args"`` object); :func:`bind` turns both into one checked dict. Access is one of three
levels (``agent.unitapi.access``); a refusal is always :class:`~agent.unitapi.errors.Refused`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent.console.backend import ConsoleBackend, SelftestItem, verdict
from agent.unitapi.access import CHANGE, OPEN, READ, Access
from agent.unitapi.errors import Refused

CONSOLE = "console"
CTL = "ctl"

MAX_LOG_LINES = 200
SELFTEST_COOLDOWN_NS = 5_000_000_000  # a self-test costs CPU: at most one every few seconds per line


ConsoleError = Refused  # the name the console's handlers have always raised

class SessionOps(Protocol):
    """What login, logout and the access check need from the line's session."""

    @property
    def technician_name(self) -> str | None: ...

    def begin_login(self) -> dict[str, Any]: ...

    def finish_login(self, key: str, signature: str, cert: str | None) -> dict[str, Any]: ...

    def logout(self) -> dict[str, Any]: ...


@dataclass
class Context:
    backend: ConsoleBackend
    session: SessionOps
    actor: str
    now_ns: int
    state: dict[str, int] = field(default_factory=dict)  # per-line memory (the last self-test...)
    front: str = CONSOLE

    @property
    def logged_in(self) -> bool:
        return self.session.technician_name is not None


@dataclass(frozen=True, slots=True)
class Arg:
    """One argument: ``kind`` is word, int, bool, text (the rest of the line) or value (any JSON value)."""

    name: str
    kind: str = "word"
    required: bool = False
    choices: tuple[str, ...] = ()
    default: Any = None
    minval: int = 0
    maxval: int = 0


Handler = Callable[[Context, dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    summary: str
    handler: Handler
    args: tuple[Arg, ...] = ()
    access: Access | Callable[[dict[str, Any]], Access] = READ
    fronts: tuple[str, ...] = (CONSOLE,)

    def access_for(self, args: dict[str, Any]) -> Access:
        return self.access(args) if callable(self.access) else self.access

    @property
    def usage(self) -> str:
        parts = [self.name]
        for a in self.args:
            word = "|".join(a.choices) if a.choices else a.name.upper()
            parts.append(word if a.required else f"[{word}]")
        return " ".join(parts)


def bind(cmd: Command, raw: list[Any] | dict[str, Any]) -> dict[str, Any]:
    """Check and convert arguments, positional or named, into a dict with every argument present."""
    named: dict[str, Any] = {}
    if isinstance(raw, list):
        words = [str(w) for w in raw]
        for i, arg in enumerate(cmd.args):
            if i >= len(words):
                break
            if arg.kind in ("text", "value") and i == len(cmd.args) - 1:
                named[arg.name] = " ".join(words[i:])
                words = words[: i + 1]
                break
            named[arg.name] = words[i]
        if len(words) > len(cmd.args):
            raise ConsoleError("bad-args", f"too many arguments: {cmd.usage}")
    else:
        unknown = sorted(set(raw) - {a.name for a in cmd.args})
        if unknown:
            raise ConsoleError("bad-args", f"unknown argument {unknown[0]!r}: {cmd.usage}")
        named = dict(raw)
    out: dict[str, Any] = {}
    for arg in cmd.args:
        if arg.name not in named or named[arg.name] is None:
            if arg.required and arg.kind == "bool":
                raise ConsoleError("bad-args", f'{cmd.name} needs "{arg.name}": true or false')
            if arg.required:
                raise ConsoleError("bad-args", f"{arg.name} is missing: {cmd.usage}")
            out[arg.name] = arg.default
            continue
        out[arg.name] = _convert(cmd, arg, named[arg.name])
    return out


def _convert(cmd: Command, arg: Arg, value: Any) -> Any:
    if arg.kind == "value":
        return value
    if arg.kind == "bool":
        if not isinstance(value, bool):
            raise ConsoleError("bad-args", f'{cmd.name} needs "{arg.name}": true or false')
        return value
    if arg.kind == "int":
        try:
            number = int(value) if not isinstance(value, bool) else None
        except (TypeError, ValueError):
            number = None
        if number is None or not arg.minval <= number <= arg.maxval:
            raise ConsoleError("bad-args", f"{arg.name} must be a whole number {arg.minval}..{arg.maxval}")
        return number
    if not isinstance(value, str):
        raise ConsoleError("bad-args", f"{arg.name} must be a string: {cmd.usage}")
    if arg.choices:
        value = value.lower()
        if value not in arg.choices:
            raise ConsoleError("bad-args", f"{arg.name} must be one of {', '.join(arg.choices)}: {cmd.usage}")
    return value


# -- handlers ------------------------------------------------------------------------------------


def _help(ctx: Context, args: dict[str, Any]) -> dict[str, Any]:
    topic = args["command"]
    rows = []
    for cmd in COMMANDS.values():
        if topic and cmd.name != topic.lower():
            continue
        access = cmd.access if isinstance(cmd.access, str) else "mixed"
        rows.append({"name": cmd.name, "usage": cmd.usage, "summary": cmd.summary, "access": access})
    if topic and not rows:
        raise ConsoleError("unknown-command", f"no command {topic!r}; `help` lists them")
    return {"commands": rows, "logged_in_as": ctx.session.technician_name, "device_id": ctx.backend.device_id}


def _selftest(ctx: Context, args: dict[str, Any]) -> dict[str, Any]:
    last = ctx.state.get("selftest_ns")
    if last is not None and ctx.now_ns - last < SELFTEST_COOLDOWN_NS:
        raise ConsoleError("busy", "a self-test just ran; wait a few seconds")
    ctx.state["selftest_ns"] = ctx.now_ns
    items: list[SelftestItem] = ctx.backend.selftest()
    result = verdict(items)
    ctx.backend.audit(ctx.actor, "console-selftest", ctx.backend.device_id, "ok" if result == "pass" else "failed",
                      verdict=result, failed=[i.name for i in items if i.result == "fail"])
    return {"verdict": result, "items": [i.as_dict() for i in items]}


def _gps(ctx: Context, args: dict[str, Any]) -> dict[str, Any]:
    data = ctx.backend.gps()
    if not ctx.logged_in and data.get("fix"):
        # where the officer is, is personal data: quality for anyone, position after a login
        data["fix"] = {k: v for k, v in data["fix"].items() if k not in ("lat_deg", "lon_deg", "alt_m")}
        data["position"] = "hidden: log in to see it"
    return data


def _sync(ctx: Context, args: dict[str, Any]) -> dict[str, Any]:
    if args["action"] == "now":
        return ctx.backend.sync_now(ctx.actor)
    return ctx.backend.sync_status()


def _record(ctx: Context, args: dict[str, Any]) -> dict[str, Any]:
    note = args["note"]
    if note is not None and len(note) > 500:
        raise ConsoleError("bad-args", "a note is at most 500 characters")
    return ctx.backend.record(args["action"], ctx.actor, note if args["action"] == "mark" else None)


def _config(ctx: Context, args: dict[str, Any]) -> dict[str, Any]:
    action, key = args["action"], args["key"]
    if action == "list":
        return ctx.backend.config_get("")
    if not key:
        raise ConsoleError("bad-args", f"config {action} needs a KEY (`config list` shows them)")
    if action == "get":
        return ctx.backend.config_get(key)
    if args["value"] is None:
        raise ConsoleError("bad-args", "config set KEY VALUE")
    return ctx.backend.config_set(key, args["value"], ctx.actor)


def _login(ctx: Context, args: dict[str, Any]) -> dict[str, Any]:
    if args["key"] is None:
        return ctx.session.begin_login()
    if args["signature"] is None:
        raise ConsoleError("bad-args", "login KEY SIGNATURE [CERT]: the answer to a challenge")
    return ctx.session.finish_login(args["key"], args["signature"], args["cert"])


def _change_if(actions: tuple[str, ...]) -> Callable[[dict[str, Any]], Access]:
    return lambda args: CHANGE if args.get("action") in actions else READ


_CMDS = [
    Command("help", "list commands, or explain one", _help, (Arg("command"),), OPEN),
    Command("version", "firmware, format, config digest", lambda c, a: c.backend.version(), (),
            OPEN),
    Command("login", "technician login (diag does it)", _login,
            (Arg("key"), Arg("signature"), Arg("cert")), OPEN),
    Command("logout", "end the technician login", lambda c, a: c.session.logout(), (), OPEN),
    Command("status", "recording, storage, battery, faults",
            lambda c, a: c.backend.status()),
    Command("sensors", "per sensor: driver, rate, drops, errors", lambda c, a: {
        "sensors": c.backend.sensors()}),
    Command("selftest", "check every part, give a verdict", _selftest),
    Command("log", "recent log lines (secrets redacted)", lambda c, a: {"lines": c.backend.log_tail(a["n"])},
            (Arg("n", "int", default=20, minval=1, maxval=MAX_LOG_LINES),)),
    Command("time", "UTC, time source, offset to GNSS", lambda c, a: c.backend.time_info()),
    Command("gps", "GNSS fix (position after a login)", _gps),
    Command("storage", "free space, hours of recording left", lambda c, a: c.backend.storage()),
    Command("sync", "uploads; `sync now` tries at once", _sync,
            (Arg("action", choices=("status", "now"), default="status"),), _change_if(("now",))),
    Command("keys", "public key fingerprints",
            lambda c, a: c.backend.key_fingerprints()),
    Command("record", "start/stop recording, mark a moment", _record,
            (Arg("action", required=True, choices=("start", "stop", "mark")), Arg("note", "text")), CHANGE),
    Command("config", "read a setting; set a safe one", _config,
            (Arg("action", required=True, choices=("get", "set", "list")), Arg("key"), Arg("value", "value")),
            _change_if(("set",))),
    Command("reboot", "seal what is open and restart", lambda c, a: c.backend.reboot(c.actor),
            (), CHANGE),
]



def _ctl_mark(ctx: Context, args: dict[str, Any]) -> dict[str, Any]:
    note = args["note"]
    return ctx.backend.record("mark", ctx.actor, str(note)[:500] if note else None)


_SWITCH = (Arg("on", "bool", required=True),)
_CMDS += [
    Command("status", "the whole status, as JSON", lambda c, a: c.backend.get_status().as_dict(), (), READ,
            (CTL,)),
    Command("start", "start recording", lambda c, a: c.backend.record("start", c.actor, None, "ctl"), (), CHANGE,
            (CTL,)),
    Command("stop", "stop recording", lambda c, a: c.backend.record("stop", c.actor), (), CHANGE, (CTL,)),
    Command("mark", "mark a moment, with an optional note", _ctl_mark, (Arg("note", "value"),), CHANGE, (CTL,)),
    Command("stealth", "indicators dark, or lit again", lambda c, a: c.backend.switch("stealth", a["on"], c.actor),
            _SWITCH, CHANGE, (CTL,)),
    Command("mute", "audio muted, or recorded again", lambda c, a: c.backend.switch("mute", a["on"], c.actor),
            _SWITCH, CHANGE, (CTL,)),
]


def commands_for(front: str) -> dict[str, Command]:
    """The rows of the table one front-end offers, by name."""
    return {c.name: c for c in _CMDS if front in c.fronts}


COMMANDS: dict[str, Command] = commands_for(CONSOLE)
CTL_COMMANDS: dict[str, Command] = commands_for(CTL)
