"""One serial line's console: bytes in, bytes out, with login, access checks and audit. Pure.

The session turns what the parser assembles into commands, runs them against the backend and
answers in the mode the line was written in: text and a prompt for a person, one JSON object
per line for a script. Time and randomness come from the caller, so every behaviour (lockout,
login expiry, error rate limits, flood handling) is tested without I/O or sleeps.

A login opens a technician session; it is not a property of the line. A script's login answer
carries a fresh session id that every later request must carry to act as that technician, so a
client that comes after it on the same line (a second ``bodycam diag`` without a key) is
anonymous whatever the first one left behind. A person's typed login serves that person's
typed lines only. Either ends on ``logout``, after ``session_idle_ns`` without a request from
its holder, on a new login, and when the line drops.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent import __version__
from agent.console import render
from agent.console.auth import CTX_LOGIN, NONCE_BYTES, Authenticator, AuthError, Technician
from agent.console.backend import BackendError, ConsoleBackend
from agent.console.guards import FloodGuard, TokenBucket
from agent.console.parser import MAX_LINE, Interrupted, Line, LineAssembler, Rejected
from agent.textsafe import safe_text
from agent.unitapi.access import CHANGE, READ
from agent.unitapi.commands import COMMANDS, ConsoleError, Context, bind

log = logging.getLogger(__name__)

__all__ = ["ANONYMOUS", "FloodGuard", "Session", "TechSession", "TokenBucket"]

ANONYMOUS = "console:anonymous"
PARTIAL_LINE_TTL_NS = 120_000_000_000  # a line left half-typed this long is forgotten
SESSION_ID_BYTES = 16
_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")


@dataclass
class TechSession:
    """An open technician login. ``session_id`` is what a script's requests must carry; None
    for a person's typed login, which serves typed lines only."""

    tech: Technician
    session_id: str | None
    last_activity_ns: int

    def admits(self, machine: bool, session_id: object) -> bool:
        """Does a request in this mode, carrying ``session_id``, belong to this session?"""
        if self.session_id is None:
            return not machine
        return machine and isinstance(session_id, str) and hmac.compare_digest(
            session_id.encode("utf-8", "replace"), self.session_id.encode())


@dataclass
class _Reply:
    cmd: str | None
    ok: bool
    data: dict[str, Any] = field(default_factory=dict)
    code: str = ""
    message: str = ""


class Session:
    """The console of one line. Not thread-safe: the line's console thread owns it.

    ``random_bytes`` makes nonces (``os.urandom`` in the unit); ``utc_ns`` is the unit's UTC,
    for certificate validity.
    """

    def __init__(
        self,
        backend: ConsoleBackend,
        auth: Authenticator,
        *,
        random_bytes: Callable[[int], bytes],
        utc_ns: Callable[[], int],
        login_required_for_read: bool = False,
        session_idle_ns: int = 900_000_000_000,
        max_line: int = MAX_LINE,
    ) -> None:
        self.backend = backend
        self.auth = auth
        self.login_required_for_read = login_required_for_read
        self.session_idle_ns = session_idle_ns
        self._random = random_bytes
        self._utc_ns = utc_ns
        self._parser = LineAssembler(max_line)
        self._login: TechSession | None = None
        self._caller: Technician | None = None  # who sent the request being handled (None: anonymous)
        self._machine = False  # the mode of the request being handled
        self._ended: str | None = None  # why the last session ended, for the next refusal
        self._last_byte_ns = 0
        self._now_ns = 0
        self._at_line_start = True
        self._greeted = False
        self._last_machine = False
        self._state: dict[str, int] = {}
        self._errors = TokenBucket(burst=20, per_s=5)
        self._suppressed = 0
        self._audit_failures = TokenBucket(burst=10, per_s=1)

    # -- SessionOps ----------------------------------------------------------------------------

    @property
    def technician_name(self) -> str | None:
        """The technician the request being handled acts as (None: anonymous)."""
        return None if self._caller is None else self._caller.name

    @property
    def actor(self) -> str:
        return ANONYMOUS if self._caller is None else self._caller.actor

    def begin_login(self) -> dict[str, Any]:
        if self.auth.trust.empty:
            raise ConsoleError("no-technicians", "this unit trusts no technician key: headquarters provisions "
                                                 "[console] technician_keys or technician_ca")
        try:
            nonce = self.auth.challenge(self._random(NONCE_BYTES), self._now_ns)
        except AuthError as exc:
            if self._audit_failures.take(self._now_ns):
                self.backend.audit(ANONYMOUS, "console-login", self.backend.device_id, "refused", code=exc.code)
            raise
        return {"nonce": nonce.hex(), "device_id": self.backend.device_id,
                "context": CTX_LOGIN.rstrip(b"\x00").decode()}

    def finish_login(self, key: str, signature: str, cert: str | None) -> dict[str, Any]:
        try:
            tech = self.auth.respond(key, signature, cert, self._now_ns, self._utc_ns())
        except AuthError as exc:
            if self._audit_failures.take(self._now_ns):
                target = key if _HEX_KEY.fullmatch(key) else "malformed key"  # never raw line text
                self.backend.audit(ANONYMOUS, "console-login", target, "failed", code=exc.code,
                                   failures=self.auth.lockout.failures)
            raise
        if self._login is not None:
            self._end_session("replaced by a new login")
        session_id = self._random(SESSION_ID_BYTES).hex() if self._machine else None
        self._login = TechSession(tech, session_id, self._now_ns)
        self._caller, self._ended = tech, None
        self.backend.audit(tech.actor, "console-login", self.backend.device_id, "ok",
                           technician=tech.name, fingerprint=tech.fingerprint, via=tech.via)
        answer: dict[str, Any] = {"technician": tech.name, "fingerprint": tech.fingerprint, "via": tech.via,
                                  "idle_timeout_s": round(self.session_idle_ns / 1e9)}
        if session_id is not None:
            answer["session"] = session_id
        return answer

    def logout(self, reason: str = "logout") -> dict[str, Any]:
        ended = self._login is not None
        self._end_session(reason)
        self._caller = None
        return {"logged_out": ended}

    def _end_session(self, reason: str) -> None:
        login, self._login = self._login, None
        self.auth.forget()
        if login is not None:
            self._ended = reason
            self.backend.audit(login.tech.actor, "console-logout", self.backend.device_id, "ok", reason=reason)

    # -- the line --------------------------------------------------------------------------------

    def feed(self, data: bytes, now_ns: int) -> bytes:
        """Consume bytes from the line; return what to send back."""
        self._now_ns = now_ns
        self._last_byte_ns = now_ns
        events, echo = self._parser.feed(data)
        out = bytearray(echo)
        if echo:
            self._at_line_start = echo.endswith(b"\n")
        for ev in events:
            if isinstance(ev, Line):
                out += self._line(ev)
            elif isinstance(ev, Rejected):
                what = "line too long" if ev.reason == "too-long" else "line is not UTF-8 text"
                out += self._answer(_Reply(None, False, code=ev.reason,
                                           message=f"{what} ({ev.length} bytes; limit {self._parser.max_line})"),
                                    ev.machine)
            elif isinstance(ev, Interrupted):
                out += self._prompt()
        return bytes(out)

    def tick(self, now_ns: int) -> bytes:
        """Called regularly: ends an idle login and forgets a line left half-typed."""
        self._now_ns = now_ns
        self._expire_login(now_ns)
        if self._parser.pending and now_ns - self._last_byte_ns > PARTIAL_LINE_TTL_NS:
            self._parser.reset()
        return b""

    def hangup(self, now_ns: int, reason: str) -> None:
        """The line went away (cable pulled, device gone): a login never outlives its line."""
        self._now_ns = now_ns
        self._end_session(f"line lost: {reason}")
        self._parser.reset()
        self._greeted = False
        self._at_line_start = True

    def flood_started(self) -> None:
        self._parser.reset()

    def flood_ended(self, discarded: int, now_ns: int) -> bytes:
        """After a flood: start clean and say what was thrown away, once."""
        self._now_ns = now_ns
        self._parser.reset()
        log.warning("console: input flood, %d bytes discarded", discarded)
        reply = _Reply(None, False, code="flood", message=f"input flood: {discarded} bytes discarded; resynchronised")
        return self._answer(reply, self._last_machine, limited=False)

    # -- internals ---------------------------------------------------------------------------

    def _expire_login(self, now_ns: int) -> None:
        if self._login is not None and now_ns - self._login.last_activity_ns > self.session_idle_ns:
            self._end_session("idle")

    def _line(self, line: Line) -> bytes:
        self._last_machine = line.machine
        if line.machine:
            return self._machine_line(line.text)
        words_text = line.text.strip()
        if not words_text:
            return self._prompt()
        try:
            words = shlex.split(words_text)
        except ValueError as exc:
            return self._answer(_Reply(None, False, code="bad-args", message=str(exc)), False)
        if not words:
            return self._prompt()
        return self._answer(self._dispatch(words[0], words[1:], False, None), False)

    def _machine_line(self, text: str) -> bytes:
        req_id: object = None
        try:
            req = json.loads(text)
        except (ValueError, RecursionError):
            return self._answer(_Reply(None, False, code="bad-json", message="not a JSON object"), True)
        if isinstance(req, dict):
            raw_id = req.get("id")
            req_id = raw_id if isinstance(raw_id, int | str) and not isinstance(raw_id, bool) else None
        if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
            return self._answer(_Reply(None, False, code="bad-request",
                                       message='expected {"cmd": "...", "args": [...] or {...}}'), True, req_id)
        args = req.get("args", [])
        if not isinstance(args, list | dict):
            return self._answer(_Reply(req["cmd"], False, code="bad-request",
                                       message='"args" must be an array or an object'), True, req_id)
        return self._answer(self._dispatch(req["cmd"], args, True, req.get("session")), True, req_id)

    def _dispatch(self, name: str, raw: list[Any] | dict[str, Any], machine: bool, session_id: object) -> _Reply:
        self._expire_login(self._now_ns)
        self._machine = machine
        login = self._login
        self._caller = login.tech if login is not None and login.admits(machine, session_id) else None
        cmd = COMMANDS.get(name.lower())
        if cmd is None:
            return _Reply(name[:32], False, code="unknown-command",
                          message=f"unknown command {name[:32]!r}; `help` lists them")
        try:
            args = bind(cmd, raw)
        except ConsoleError as exc:
            return _Reply(cmd.name, False, code=exc.code, message=str(exc))
        access = cmd.access_for(args)
        stale = session_id is not None and self._caller is None
        if stale or (self._caller is None and (access == CHANGE or (access == READ and self.login_required_for_read))):
            if access == CHANGE and self._audit_failures.take(self._now_ns):
                self.backend.audit(ANONYMOUS, f"console-{cmd.name}", self.backend.device_id, "refused",
                                   reason="session ended" if stale else "not logged in", args=_audit_args(args))
            if stale:  # a script that believes it is logged in must learn that it is not, not act anonymously
                why = f" ({self._ended})" if self._ended else ""
                return _Reply(cmd.name, False, code="session-ended",
                              message=f"this session is not open on the unit{why}: log in again")
            why = " (the last login ended after being idle)" if self._ended == "idle" else ""
            return _Reply(cmd.name, False, code="login-required",
                          message=f"`{cmd.name}` needs a technician login{why}")
        if login is not None and self._caller is not None:
            login.last_activity_ns = self._now_ns  # only its holder keeps a session alive
        ctx = Context(self.backend, self, self.actor, self._now_ns, self._state)
        try:
            data = cmd.handler(ctx, args)
        except (ConsoleError, BackendError, AuthError) as exc:
            self._audit_change(access, cmd.name, args, "refused", reason=str(exc))
            return _Reply(cmd.name, False, code=exc.code, message=str(exc))
        except Exception as exc:
            log.exception("console command %s failed", cmd.name)
            self._audit_change(access, cmd.name, args, "failed", reason=f"{type(exc).__name__}: {exc}")
            return _Reply(cmd.name, False, code="internal", message=f"{type(exc).__name__}: {exc}")
        self._audit_change(access, cmd.name, args, "ok")
        return _Reply(cmd.name, True, data=data)

    def _audit_change(self, access: str, name: str, args: dict[str, Any], outcome: str, **detail: Any) -> None:
        if access == CHANGE:
            self.backend.audit(self.actor, f"console-{name}", self.backend.device_id, outcome,
                               args=_audit_args(args), **detail)

    def _answer(self, reply: _Reply, machine: bool, req_id: object = None, limited: bool = True) -> bytes:
        if not reply.ok and limited and not self._errors.take(self._now_ns):
            self._suppressed += 1  # a flood of bad lines gets no flood of answers
            return b""
        out = bytearray()
        if not self._at_line_start:
            out += b"\r\n"
        if self._suppressed:
            note = f"({self._suppressed} error answers suppressed)"
            out += (json.dumps({"ok": False, "error": {"code": "suppressed", "message": note}}).encode()
                    if machine else note.encode()) + b"\r\n"
            self._suppressed = 0
        if machine:
            out += _json_line(reply, req_id)
            self._at_line_start = True
            return bytes(out)
        if reply.ok:
            text = render.render(reply.cmd or "", reply.data)
        else:
            text = render.render_error(reply.code, reply.message)
        # answers hold text from outside (driver errors, log lines, config values): nothing in it may
        # drive the technician's terminal
        out += safe_text(text, multiline=True).replace("\n", "\r\n").encode() + b"\r\n"
        self._at_line_start = True
        return bytes(out) + self._prompt()

    def _prompt(self) -> bytes:
        out = b""
        if not self._greeted:
            self._greeted = True
            out = (f"bodycam console, unit {safe_text(self.backend.device_id)}, firmware {__version__}. "
                   "Type help.\r\n").encode()
        mark = "#" if self._login is not None and self._login.session_id is None else ">"
        self._at_line_start = False
        return out + f"bodycam:{safe_text(self.backend.device_id)}{mark} ".encode()


def _audit_args(args: dict[str, Any]) -> dict[str, Any]:
    """Arguments as the audit log keeps them: a mark's note is sealed evidence, never copied here."""
    return {k: (v is not None if k == "note" else v) for k, v in args.items() if v is not None or k == "note"}


def _json_line(reply: _Reply, req_id: object) -> bytes:
    doc: dict[str, Any] = {"ok": reply.ok}
    if reply.cmd is not None:
        doc["cmd"] = reply.cmd
    if req_id is not None:
        doc["id"] = req_id
    if reply.ok:
        doc["data"] = reply.data
    else:
        doc["error"] = {"code": reply.code, "message": reply.message}
    try:
        text = json.dumps(doc, default=str, allow_nan=False, separators=(",", ":"))
    except ValueError:
        doc = {"ok": False, "error": {"code": "internal", "message": "answer held a non-finite number"}}
        text = json.dumps(doc)
    return text.encode() + b"\r\n"
