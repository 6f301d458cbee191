"""The console session over a fake unit: every command in both modes, access, login, audit, floods."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.console.auth import Authenticator, Lockout, TrustStore, key_fingerprint, login_message, raw_public
from agent.console.backend import BackendError, SelftestItem
from agent.console.session import FloodGuard, Session, TokenBucket
from agent.unitapi.commands import COMMANDS

S = 1_000_000_000
UNIT = "unit-7"


class FakeBackend:
    """A unit in memory: canned answers, every call and audit record kept."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.audits: list[dict[str, Any]] = []
        self.settings: dict[str, object] = {"recording.pre_event_s": 30.0}
        self.selftest_items = [SelftestItem("clock", "pass", "synced"), SelftestItem("sensor chest", "pass", "ok")]

    @property
    def device_id(self) -> str:
        return UNIT

    def _call(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))

    def version(self) -> dict[str, Any]:
        return {"firmware": "0.1.0", "format_version": 1, "config_sha256": "ab" * 32}

    def status(self) -> dict[str, Any]:
        return {"device_id": UNIT, "state": "ready", "uptime_s": 12.5, "dropped": {"chest": 0},
                "storage": {"level": "ok", "free_bytes": 10**10, "hours_left": 5.5}, "faults": [],
                "sync": {"state": "off", "backlog_entries": 0, "backlog_bytes": 0}, "time": {"source": "ntp"}}

    def sensors(self) -> list[dict[str, Any]]:
        return [{"name": "chest", "driver": "sim", "state": "running", "rate_hz_configured": 30.0,
                 "rate_hz_achieved": 29.9, "dropped": 0, "last_error": None, "temperature_c": None}]

    def selftest(self) -> list[SelftestItem]:
        self._call("selftest")
        return list(self.selftest_items)

    def log_tail(self, n: int) -> list[str]:
        return [f"line {i}" for i in range(n)]

    def time_info(self) -> dict[str, Any]:
        return {"utc_ns": 1, "source": "ntp", "synced": True}

    def gps(self) -> dict[str, Any]:
        return {"enabled": True, "fix": {"mode": "3D fix", "h_acc_m": 3.0, "lat_deg": 52.1, "lon_deg": 4.3}}

    def storage(self) -> dict[str, Any]:
        return {"level": "ok", "free_bytes": 10**10}

    def sync_status(self) -> dict[str, Any]:
        return {"state": "idle", "backlog_entries": 2}

    def sync_now(self, actor: str) -> dict[str, Any]:
        self._call("sync_now", actor)
        return {"kicked": True}

    def key_fingerprints(self) -> dict[str, Any]:
        return {"keys": [{"role": "device", "name": UNIT, "fingerprint": "cd" * 32}]}

    def record(self, action: str, actor: str, note: str | None = None) -> dict[str, Any]:
        self._call("record", action, actor, note)
        if action == "stop":
            raise BackendError("refused", "not recording")
        return {"action": action}

    def config_get(self, key: str) -> dict[str, Any]:
        if key and key not in self.settings:
            raise BackendError("bad-value", f"no setting {key!r}")
        return {"key": key, "running": self.settings.get(key)}

    def config_set(self, key: str, value: object, actor: str) -> dict[str, Any]:
        self._call("config_set", key, value, actor)
        old = self.settings.get(key)
        self.settings[key] = float(str(value))
        return {"key": key, "old": old, "new": self.settings[key], "changed": True}

    def reboot(self, actor: str) -> dict[str, Any]:
        self._call("reboot", actor)
        return {"restarting": True}

    def audit(self, actor: str, action: str, target: str, outcome: str, **detail: Any) -> None:
        assert outcome in ("ok", "refused", "failed"), outcome  # as the store insists
        self.audits.append({"actor": actor, "action": action, "target": target, "outcome": outcome, **detail})


class Rig:
    """A session on a fake unit with one trusted technician key and a clock the test moves."""

    def __init__(self, read_login: bool = False, lockout_after: int = 3) -> None:
        self.backend = FakeBackend()
        self.key = ed25519.Ed25519PrivateKey.generate()
        trust = TrustStore(UNIT, {key_fingerprint(self.key.public_key()): ("alice", self.key.public_key())})
        self.auth = Authenticator(trust, Lockout(lockout_after, 30 * S, 600 * S))
        self.now = 100 * S
        self.session = Session(self.backend, self.auth, random_bytes=os.urandom, utc_ns=lambda: 1_715_680_800 * S,
                               login_required_for_read=read_login, session_idle_ns=900 * S)
        self.session_id: str | None = None  # what this script's requests carry after its login

    def type(self, line: str) -> str:
        self.now += S // 10
        return self.session.feed(line.encode() + b"\r", self.now).decode()

    def ask(self, cmd: str, args: list[Any] | dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
        self.now += S // 10
        req: dict[str, Any] = {"cmd": cmd, **extra}
        if self.session_id is not None and cmd != "login":
            req.setdefault("session", self.session_id)
        if args is not None:
            req["args"] = args
        out = self.session.feed(json.dumps(req).encode() + b"\n", self.now).decode()
        lines = [line for line in out.split("\r\n") if line.startswith("{")]
        assert len(lines) == 1, out
        doc: dict[str, Any] = json.loads(lines[0])
        return doc

    def login(self, key: ed25519.Ed25519PrivateKey | None = None) -> dict[str, Any]:
        key = key or self.key
        challenge = self.ask("login")
        assert challenge["ok"], challenge
        sig = key.sign(login_message(UNIT, bytes.fromhex(challenge["data"]["nonce"])))
        doc = self.ask("login", {"key": raw_public(key.public_key()).hex(), "signature": sig.hex()})
        self.session_id = doc["data"]["session"] if doc["ok"] else None
        return doc


READ_COMMANDS = [["status"], ["sensors"], ["selftest"], ["log", "3"], ["time"], ["gps"], ["storage"], ["sync"],
                 ["keys"], ["config", "get", "recording.pre_event_s"], ["config", "list"]]
OPEN_COMMANDS = [["help"], ["help", "record"], ["version"], ["logout"]]
CHANGE_COMMANDS = [["record", "start"], ["record", "mark", "door", "opened"], ["sync", "now"],
                   ["config", "set", "recording.pre_event_s", "10"], ["reboot"]]


# -- human mode ------------------------------------------------------------------------------------


def test_a_person_gets_a_greeting_a_prompt_and_aligned_tables() -> None:
    r = Rig()
    out = r.type("")
    assert "bodycam console, unit unit-7" in out and out.endswith("bodycam:unit-7> ")
    out = r.type("sensors")
    assert out.startswith("sensors\r\n")  # the echo
    header, row = out.split("\r\n")[1:3]
    assert header.split() == ["SENSOR", "DRIVER", "STATE", "RATE", "HZ", "DROPPED", "TEMP", "LAST", "ERROR"]
    assert header.index("DRIVER") == row.index("sim") and "29.9/30.0" in row
    assert out.endswith("bodycam:unit-7> ")


@pytest.mark.parametrize("words", READ_COMMANDS + OPEN_COMMANDS, ids=lambda w: " ".join(w))
def test_every_read_and_open_command_answers_a_person(words: list[str]) -> None:
    out = Rig().type(" ".join(words))
    assert "error (" not in out, out
    assert out.endswith("> ")
    assert max(len(line) for line in out.split("\r\n")) <= 80, out  # fits a terminal


def test_selftest_prints_a_clear_verdict() -> None:
    r = Rig()
    assert "VERDICT: PASS" in r.type("selftest")
    r.backend.selftest_items.append(SelftestItem("encoder video", "fail", "no packet"))
    r.now += 10 * S
    out = r.type("selftest")
    assert "VERDICT: FAIL (encoder video failed)" in out and "FAIL  " in out


def test_selftest_is_rate_limited_per_line() -> None:
    r = Rig()
    assert r.ask("selftest")["ok"]
    assert r.ask("selftest")["error"]["code"] == "busy"
    r.now += 6 * S
    assert r.ask("selftest")["ok"]


def test_typing_mistakes_get_short_errors() -> None:
    r = Rig()
    assert "error (unknown-command): unknown command 'stauts'" in r.type("stauts")
    assert "error (bad-args)" in r.type("log many")
    assert "error (bad-args)" in r.type("log 100000")
    assert "error (bad-args)" in r.type('config get "unbalanced')
    assert "error (bad-args): too many arguments" in r.type("status now please")


def test_commands_are_case_insensitive_for_people() -> None:
    assert "SENSOR" in Rig().type("SENSORS")


# -- machine mode ----------------------------------------------------------------------------------


@pytest.mark.parametrize("words", READ_COMMANDS + OPEN_COMMANDS, ids=lambda w: " ".join(w))
def test_every_read_and_open_command_answers_a_script(words: list[str]) -> None:
    doc = Rig().ask(words[0], words[1:], id=7)
    assert doc["ok"] is True and doc["cmd"] == words[0] and doc["id"] == 7
    assert isinstance(doc["data"], dict)


def test_named_and_positional_arguments_are_the_same() -> None:
    r = Rig()
    assert r.ask("log", ["2"])["data"] == r.ask("log", {"n": 2})["data"] == {"lines": ["line 0", "line 1"]}
    assert r.ask("log", {"lines": 2})["error"]["code"] == "bad-args"


def test_machine_errors_have_a_code_and_a_message() -> None:
    r = Rig()
    cases = [('{not json', "bad-json"), ('{"cmd": 5}', "bad-request"), ('{"args": []}', "bad-request"),
             ('{"cmd": "status", "args": 3}', "bad-request"), ('{"cmd": "nope"}', "unknown-command"),
             ('{"cmd": "log", "args": {"n": "x"}}', "bad-args"), ('{"cmd": "record"}', "bad-args")]
    for req, code in cases:
        r.now += S
        doc = json.loads(r.session.feed(req.encode() + b"\n", r.now).decode())
        assert doc["ok"] is False and doc["error"]["code"] == code and doc["error"]["message"], req


def test_a_json_answer_starts_on_its_own_line_after_a_prompt() -> None:
    r = Rig()
    r.type("")  # leaves a prompt without a newline
    out = r.session.feed(b'{"cmd":"version","id":1}\n', r.now + S).decode()
    assert out.startswith("\r\n{") and json.loads(out.strip())["id"] == 1


# -- access and login ------------------------------------------------------------------------------


@pytest.mark.parametrize("words", CHANGE_COMMANDS, ids=lambda w: " ".join(w))
def test_changes_need_a_login_and_the_refusal_is_audited(words: list[str]) -> None:
    r = Rig()
    doc = r.ask(words[0], words[1:])
    assert doc["error"]["code"] == "login-required"
    assert not [c for c in r.backend.calls if c[0] != "selftest"]
    assert r.backend.audits[-1]["outcome"] == "refused" and r.backend.audits[-1]["actor"] == "console:anonymous"


@pytest.mark.parametrize("words", CHANGE_COMMANDS, ids=lambda w: " ".join(w))
def test_a_technician_changes_and_every_change_is_audited(words: list[str]) -> None:
    r = Rig()
    assert r.login()["ok"]
    doc = r.ask(words[0], words[1:])
    assert doc["ok"], doc
    audit = r.backend.audits[-1]
    assert audit["action"] == f"console-{words[0]}" and audit["outcome"] == "ok"
    assert audit["actor"].startswith("console:alice:")
    assert any(str(a).startswith("console:alice:") for a in r.backend.calls[-1][1])  # the backend got the actor


def test_a_marks_note_never_reaches_the_audit_log() -> None:
    r = Rig()
    r.login()
    assert r.ask("record", ["mark", "suspect", "fled", "north"])["ok"]
    assert r.backend.calls[-1] == ("record", ("mark", r.backend.calls[-1][1][1], "suspect fled north"))
    assert "suspect" not in json.dumps(r.backend.audits)
    assert r.backend.audits[-1]["args"]["note"] is True


def test_a_refused_change_is_audited_as_refused() -> None:
    r = Rig()
    r.login()
    doc = r.ask("record", ["stop"])
    assert doc["error"] == {"code": "refused", "message": "not recording"}
    assert r.backend.audits[-1]["outcome"] == "refused"


def test_logins_and_failures_are_audited_and_lock_the_line() -> None:
    r = Rig(lockout_after=3)
    stranger = ed25519.Ed25519PrivateKey.generate()
    codes = [r.login(stranger)["error"]["code"] for _ in range(3)]
    assert codes == ["unknown-key"] * 3
    assert [a["outcome"] for a in r.backend.audits] == ["failed"] * 3
    assert r.ask("login")["error"]["code"] == "locked"
    assert r.backend.audits[-1]["outcome"] == "refused" and r.backend.audits[-1]["code"] == "locked"
    r.now += 31 * S
    assert r.login()["ok"]
    assert r.backend.audits[-1]["action"] == "console-login" and r.backend.audits[-1]["outcome"] == "ok"
    assert [a["outcome"] for a in r.backend.audits] == ["failed", "failed", "failed", "refused", "ok"]
    assert r.ask("logout")["data"] == {"logged_out": True}
    assert r.backend.audits[-1]["action"] == "console-logout"
    assert r.ask("reboot")["error"]["code"] == "session-ended"
    assert r.ask("reboot", session=None)["error"]["code"] == "login-required"


def test_a_scripts_login_is_not_a_persons_prompt() -> None:
    r = Rig()
    r.login()
    assert r.type("").endswith("bodycam:unit-7> ")
    assert "login-required" in r.type("reboot")


def test_a_login_ends_when_idle_and_when_the_line_drops() -> None:
    r = Rig()
    r.login()
    r.now += 901 * S
    r.session.tick(r.now)
    doc = r.ask("reboot")
    assert doc["error"]["code"] == "session-ended" and "idle" in doc["error"]["message"]
    doc = r.ask("reboot", session=None)
    assert doc["error"]["code"] == "login-required" and "idle" in doc["error"]["message"]
    r.login()
    r.session.hangup(r.now, "cable pulled")
    assert r.ask("reboot")["error"]["code"] == "session-ended"
    assert r.backend.audits[-2]["reason"] == "line lost: cable pulled"


def test_a_client_after_a_login_on_the_same_line_acts_as_nobody() -> None:
    r = Rig()
    assert r.login()["ok"]
    assert r.ask("record", ["mark"])["ok"]  # the client that signed, with its session id
    for cmd, args in [("record", ["start"]), ("record", ["stop"]), ("config", ["set", "recording.pre_event_s", "7"]),
                      ("sync", ["now"]), ("reboot", [])]:
        doc = r.ask(cmd, args, session=None)  # the next client on the line, without a key
        assert doc["error"]["code"] == "login-required", doc
        assert r.backend.audits[-1]["actor"] == "console:anonymous"
    assert r.ask("help", session=None)["data"]["logged_in_as"] is None
    assert "lat_deg" not in r.ask("gps", session=None)["data"]["fix"]
    assert "login-required" in r.type("record start")  # nor a person typing on the line
    forged = r.ask("record", ["start"], session="00" * 16)
    assert forged["error"]["code"] == "session-ended"
    acted = [c for c in r.backend.calls if c[0] in ("record", "config_set", "sync_now", "reboot")]
    assert acted == [("record", ("mark", acted[0][1][1], None))]  # only the signed mark


def test_a_persons_login_serves_typed_lines_only() -> None:
    r = Rig()
    out = r.type("login")
    nonce = out.split("challenge for unit unit-7: ")[1].split()[0]
    sig = r.key.sign(login_message(UNIT, bytes.fromhex(nonce))).hex()
    assert "logged in as alice" in r.type(f"login {raw_public(r.key.public_key()).hex()} {sig}")
    assert r.ask("record", ["start"])["error"]["code"] == "login-required"  # a script on the same line
    assert "error" not in r.type("record start")


def test_only_the_sessions_holder_keeps_it_alive() -> None:
    r = Rig()
    r.login()
    for _ in range(20):  # someone else polls the line for 20 minutes
        r.now += 60 * S
        assert r.ask("status", session=None)["ok"]
        r.session.tick(r.now)
    doc = r.ask("record", ["start"])
    assert doc["error"]["code"] == "session-ended" and "idle" in doc["error"]["message"]
    logout = [a for a in r.backend.audits if a["action"] == "console-logout"]
    assert [a["reason"] for a in logout] == ["idle"] and logout[0]["actor"].startswith("console:alice:")
    assert r.backend.audits[-1]["outcome"] == "refused" and r.backend.audits[-1]["reason"] == "session ended"


def test_a_new_login_ends_the_previous_session() -> None:
    r = Rig()
    r.login()
    first = r.session_id
    r.login()
    assert r.ask("record", ["mark"], session=first)["error"]["code"] == "session-ended"
    assert r.ask("record", ["mark"])["ok"]
    assert any(a.get("reason") == "replaced by a new login" for a in r.backend.audits)


def test_text_from_the_unit_reaches_a_terminal_with_its_controls_escaped() -> None:
    r = Rig()
    evil = "\x1b[2J\x1b]0;owned\x07\u009b31mVERDICT: PASS\u202e\r"
    r.backend.log_tail = lambda n: [evil]  # type: ignore[method-assign]
    out = r.type("log 1")
    assert "VERDICT: PASS" in out
    for byte in ("\x1b", "\x07", "\u009b", "\u202e"):
        assert byte not in out
    assert "\\x1b[2J" in out and "\\x9b31m" in out and "\\u202e" in out
    doc = r.ask("log", ["1"])  # JSON mode carries the data as it is: JSON escapes are inert
    assert doc["data"]["lines"] == [evil]


def test_the_echo_of_typed_bytes_escapes_c1_controls() -> None:
    r = Rig()
    out = r.session.feed("x\u009b2J\u202ey".encode(), r.now)
    assert out == b"x\\x9b2J\\u202ey"


def test_a_unit_without_technician_keys_says_so() -> None:
    r = Rig()
    r.auth.trust = TrustStore(UNIT)
    assert r.ask("login")["error"]["code"] == "no-technicians"


def test_reads_can_require_a_login_but_help_and_version_never_do() -> None:
    r = Rig(read_login=True)
    assert r.ask("status")["error"]["code"] == "login-required"
    assert r.ask("help")["ok"] and r.ask("version")["ok"]
    r.login()
    assert r.ask("status")["ok"]


def test_the_position_is_shown_only_after_a_login() -> None:
    r = Rig()
    fix = r.ask("gps")["data"]["fix"]
    assert "lat_deg" not in fix and fix["mode"] == "3D fix"
    r.login()
    assert r.ask("gps")["data"]["fix"]["lat_deg"] == 52.1


def test_a_human_can_log_in_by_hand() -> None:
    r = Rig()
    out = r.type("login")
    nonce = out.split("challenge for unit unit-7: ")[1].split()[0]
    sig = r.key.sign(login_message(UNIT, bytes.fromhex(nonce))).hex()
    out = r.type(f"login {raw_public(r.key.public_key()).hex()} {sig}")
    assert "logged in as alice" in out and out.endswith("# ")


# -- robustness ------------------------------------------------------------------------------------


def test_a_backend_bug_is_an_internal_error_not_a_crash() -> None:
    r = Rig()

    def broken() -> dict[str, Any]:
        raise RuntimeError("boom")

    r.backend.status = broken  # type: ignore[method-assign]
    assert r.ask("status")["error"] == {"code": "internal", "message": "RuntimeError: boom"}
    assert r.ask("version")["ok"]


def test_a_flood_of_bad_lines_gets_a_bounded_number_of_answers() -> None:
    r = Rig()
    out = r.session.feed(b"garbage\r" * 1000, r.now)
    assert out.count(b"error (unknown-command)") == 20
    r.now += 10 * S
    out = r.session.feed(b"version\r", r.now)
    assert b"(980 error answers suppressed)" in out and b"firmware" in out


def test_overlong_and_binary_lines_are_answered_in_their_mode() -> None:
    r = Rig()
    out = r.session.feed(b"{" + b"x" * 5000 + b"\n", r.now).decode()
    assert json.loads(out.strip())["error"]["code"] == "too-long"
    out = r.session.feed(b"\xff\xfe\r", r.now + S).decode("utf-8", "replace")
    assert "error (not-utf8)" in out


def test_token_bucket() -> None:
    b = TokenBucket(burst=2, per_s=1)
    assert [b.take(0), b.take(0), b.take(0)] == [True, True, False]
    assert b.take(S) and not b.take(S)


def test_flood_guard_parses_a_lines_worth_then_discards_pauses_and_reports_once() -> None:
    g = FloodGuard(parse_per_s=4000, discard_per_s=40_000)  # 1000 parsed, 10000 thrown per 0.25 s window
    assert g.admit(900, 0) is True
    assert g.admit(900, S // 100) is False and g.flooding
    assert g.pause_s(S // 100) == 0
    assert g.admit(10_000, S // 50) is False
    assert 0 < g.pause_s(S // 50) <= 0.25
    assert g.ended(S // 10) is None  # still within the quiet time
    assert g.ended(S) == 10_900 and not g.flooding
    assert g.ended(2 * S) is None
    assert g.admit(900, 3 * S) is True


def test_after_a_flood_the_session_starts_clean_and_says_so() -> None:
    r = Rig()
    r.session.feed(b"half a line of garb", r.now)
    r.session.flood_started()
    out = r.session.flood_ended(123456, r.now + S).decode()
    assert "input flood: 123456 bytes discarded" in out
    assert "status" in r.type("status") and "error" not in r.type("status")


# -- fuzzing ---------------------------------------------------------------------------------------

_json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                            lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
                            max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.fixed_dictionaries({"cmd": st.sampled_from([*COMMANDS, "nope", ""]), "args": _json_values},
                          optional={"id": _json_values}),
    _json_values,
))
def test_fuzz_json_mode_always_answers_one_well_formed_line(req: object) -> None:
    r = Rig()
    r.backend.reboot = lambda actor: {"restarting": True}  # type: ignore[method-assign]
    text = json.dumps(req)
    if not text.startswith("{"):
        text = "{" + text
    out = r.session.feed(text.encode() + b"\n", r.now).decode()
    lines = [line for line in out.split("\r\n") if line]
    assert len(lines) == 1, out
    doc = json.loads(lines[0])
    assert isinstance(doc["ok"], bool)
    if doc["ok"]:
        assert isinstance(doc["data"], dict)
    else:
        assert set(doc["error"]) == {"code", "message"} and doc["error"]["code"] != "internal"
    # nothing changed without a login
    assert not [c for c in r.backend.calls if c[0] in ("record", "config_set", "sync_now", "reboot")]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=500), max_size=10))
def test_fuzz_raw_bytes_never_raise_and_the_console_still_answers(chunks: list[bytes]) -> None:
    r = Rig()
    for c in chunks:
        r.now += S // 100
        r.session.feed(c, r.now)
    r.now += 60 * S  # long enough for the error budget to refill
    out = r.session.feed(b'\x15\r\n{"cmd":"version","id":99}\n', r.now).decode("utf-8", "replace")
    answers = [json.loads(line[line.index("{"):]) for line in out.split("\r\n") if '"id":99' in line]
    assert answers and answers[-1]["ok"]
