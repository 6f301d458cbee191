"""Operations-room accounts: lockout, TOTP, session expiry (pure) and the account service over a
real SQLite index with a fake clock."""

from __future__ import annotations

from pathlib import Path

import pyotp
import pytest

from hq.accounts import lockout, totp
from hq.accounts.lockout import Failures, LockoutPolicy
from hq.accounts.passwords import Passwords, weak_reason
from hq.accounts.records import Role
from hq.accounts.service import SIGNIN_FAILED, AccountError, AccountService, SignInRefused
from hq.accounts.sessions import SessionPolicy, expiry
from hq.audit import Auditor
from hq.index import SqliteIndex

S = 1_000_000_000
T0 = 1_800_000_000 * S  # a fixed wall-clock start, on a TOTP step boundary plus 0 s


# -- pure parts ---------------------------------------------------------------------------------

def test_lockout_waits_only_after_the_free_failures_then_doubles_up_to_the_cap() -> None:
    policy = LockoutPolicy(free=3, base_s=1.0, max_s=8.0, forget_s=60.0)
    failures = None
    waits = []
    for _ in range(8):
        failures = lockout.after_failure(failures, policy, T0)
        waits.append(lockout.wait_s(failures, policy, T0))
    assert waits == [0.0, 0.0, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert lockout.wait_s(failures, policy, T0 + 5 * S) == 3.0  # the wait runs from the last failure
    assert lockout.wait_s(failures, policy, T0 + 60 * S) == 0.0  # forgotten
    assert lockout.after_failure(failures, policy, T0 + 60 * S) == Failures(1, T0 + 60 * S)


def test_totp_accepts_one_step_either_side_and_never_a_code_again() -> None:
    secret = totp.new_secret()
    now_s = T0 / S + 10
    step = int(now_s // 30)
    for offset in (-1, 0, 1):
        code = pyotp.TOTP(secret).at((step + offset) * 30)
        assert totp.matching_step(secret, code, now_s, None) == step + offset
    for offset in (-2, 2):
        assert totp.matching_step(secret, pyotp.TOTP(secret).at((step + offset) * 30), now_s, None) is None
    code = pyotp.TOTP(secret).at(step * 30)
    assert totp.matching_step(secret, code, now_s, last_used_step=step) is None  # replayed
    assert totp.matching_step(secret, pyotp.TOTP(secret).at((step - 1) * 30), now_s, step) is None  # older
    assert totp.matching_step(secret, pyotp.TOTP(secret).at((step + 1) * 30), now_s, step) == step + 1
    assert totp.matching_step(secret, "12345a", now_s, None) is None
    assert totp.matching_step(secret, code[:3] + " " + code[3:], now_s, None) == step  # as apps show it
    assert totp.provisioning_uri(secret, "ada").startswith("otpauth://totp/bodycam%20HQ:ada?secret=" + secret)


def test_sessions_end_after_idle_or_absolute_timeout() -> None:
    policy = SessionPolicy(idle_s=900, absolute_s=12 * 3600)
    assert expiry(T0, T0, T0 + 899 * S, policy) is None
    assert expiry(T0, T0, T0 + 900 * S, policy) == "idle"
    active = T0 + 12 * 3600 * S - S
    assert expiry(T0, active, active, policy) is None
    assert expiry(T0, active, T0 + 12 * 3600 * S, policy) == "absolute"


def test_passwords_are_argon2id_and_short_ones_are_refused() -> None:
    passwords = Passwords(memory_kib=8 * 1024, time_cost=1)
    stored = passwords.hash("correct horse battery")
    assert stored.startswith("$argon2id$v=19$m=8192,t=1,p=1$")
    assert passwords.verify(stored, "correct horse battery")
    assert not passwords.verify(stored, "correct horse batterY")
    assert not passwords.verify(None, "correct horse battery")
    assert Passwords().needs_rehash(stored) and not passwords.needs_rehash(stored)
    assert weak_reason("short") is not None and weak_reason("a long enough one") is None


# -- the service over a real index --------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.ns = T0

    def __call__(self) -> int:
        return self.ns


@pytest.fixture
def index(tmp_path: Path) -> SqliteIndex:
    with SqliteIndex(tmp_path / "index.sqlite") as idx:
        yield idx  # type: ignore[misc]


def _service(index: SqliteIndex, clock: Clock, passwords: Passwords | None = None) -> AccountService:
    return AccountService(index.accounts(), Auditor(index, "hq-web", clock), clock,
                          passwords or Passwords(memory_kib=8 * 1024, time_cost=1),
                          SessionPolicy(idle_s=900, absolute_s=3600))


def _code(secret: str, clock: Clock, step_offset: int = 0) -> str:
    return pyotp.TOTP(secret).at(clock.ns // S + step_offset * 30)


def _events(index: SqliteIndex, event_type: str) -> list[tuple[str, str, dict[str, object]]]:
    return [(r.actor, r.outcome, r.detail) for r in index.audit_log(event_type)]


def test_sign_in_opens_a_session_that_resumes_until_idle(index: SqliteIndex) -> None:
    clock = Clock()
    accounts = _service(index, clock)
    creds = accounts.add_user("ada", frozenset({Role.AUDITOR}), "cli:root")
    signed = accounts.sign_in("ada", creds.password, _code(creds.totp_secret, clock), "10.0.0.9")
    assert len(signed.session_id) >= 43 and signed.session.id_sha256 != signed.session_id
    assert index.accounts().session(signed.session.id_sha256) is not None  # only the hash is stored
    clock.ns += 600 * S
    found = accounts.resume(signed.session_id)
    assert found is not None and found[1].name == "ada"
    clock.ns += 899 * S  # 899 s after the last request
    assert accounts.resume(signed.session_id) is not None
    clock.ns += 900 * S
    assert accounts.resume(signed.session_id) is None
    assert _events(index, "session-timeout") == [("ada", "ok", {"reason": "idle"})]
    assert _events(index, "signin")[0][:2] == ("ada", "ok")


def test_refusals_say_the_same_whatever_was_wrong_and_audit_why(index: SqliteIndex) -> None:
    clock = Clock()
    accounts = _service(index, clock)
    creds = accounts.add_user("sam", frozenset({Role.SUPERVISOR}), "cli:root")
    attempts = [("nobody", creds.password, _code(creds.totp_secret, clock)),
                ("sam", "wrong password!", _code(creds.totp_secret, clock)),
                ("sam", creds.password, _code(creds.totp_secret, clock, 2))]
    for name, password, code in attempts:
        with pytest.raises(SignInRefused) as refused:
            accounts.sign_in(name, password, code, "10.0.0.9")
        assert str(refused.value) == SIGNIN_FAILED
    reasons = [detail["reason"] for _, outcome, detail in _events(index, "signin") if outcome == "failed"]
    assert reasons == ["unknown-user", "bad-password", "bad-code"]


def test_lockout_per_account_backs_off_and_a_success_clears_it(index: SqliteIndex) -> None:
    clock = Clock()
    accounts = _service(index, clock)
    creds = accounts.add_user("olivia", frozenset({Role.OPERATOR}), "cli:root")
    for _ in range(5):
        with pytest.raises(SignInRefused):
            accounts.sign_in("olivia", "not her password", "000000", "10.0.0.1")
    with pytest.raises(SignInRefused) as locked:  # the right credentials, but locked for now
        accounts.sign_in("olivia", creds.password, _code(creds.totp_secret, clock), "10.0.0.2")
    assert locked.value.wait_s == 1.0 and "wait" in str(locked.value)
    clock.ns += 2 * S
    accounts.sign_in("olivia", creds.password, _code(creds.totp_secret, clock), "10.0.0.2")
    assert index.accounts().failures("user:olivia") is None


def test_an_unknown_name_is_locked_out_like_a_known_one(index: SqliteIndex) -> None:
    clock = Clock()
    accounts = _service(index, clock)
    for _ in range(5):
        with pytest.raises(SignInRefused):
            accounts.sign_in("ghost", "whatever it is", "000000", "10.0.0.1")
    with pytest.raises(SignInRefused) as locked:
        accounts.sign_in("ghost", "whatever it is", "000000", "10.0.0.3")
    assert locked.value.wait_s > 0


def test_disable_and_reset_end_sessions_and_old_credentials(index: SqliteIndex) -> None:
    clock = Clock()
    accounts = _service(index, clock)
    creds = accounts.add_user("root", frozenset({Role.ADMIN}), "cli:root")
    first = accounts.sign_in("root", creds.password, _code(creds.totp_secret, clock), "10.0.0.1")
    new = accounts.reset("root", "cli:root")
    assert accounts.resume(first.session_id) is None
    clock.ns += 60 * S
    with pytest.raises(SignInRefused):
        accounts.sign_in("root", creds.password, _code(new.totp_secret, clock), "10.0.0.1")
    second = accounts.sign_in("root", new.password, _code(new.totp_secret, clock), "10.0.0.1")
    assert accounts.disable("root", "cli:root") == 1
    assert accounts.resume(second.session_id) is None
    clock.ns += 60 * S
    with pytest.raises(SignInRefused):
        accounts.sign_in("root", new.password, _code(new.totp_secret, clock), "10.0.0.1")
    assert [e[0] for e in _events(index, "user-reset")] == ["cli:root"]
    assert _events(index, "user-disable")[0][2] == {"sessions_ended": 1}


def test_the_hash_is_upgraded_at_sign_in_when_the_parameters_change(index: SqliteIndex) -> None:
    clock = Clock()
    creds = _service(index, clock).add_user("ada", frozenset({Role.AUDITOR}), "cli:root")
    stronger = _service(index, clock, Passwords(memory_kib=16 * 1024, time_cost=2))
    stronger.sign_in("ada", creds.password, _code(creds.totp_secret, clock), "10.0.0.1")
    stored = index.accounts().user("ada")
    assert stored is not None and "$m=16384,t=2,p=1$" in stored.password_hash


def test_a_one_time_link_signs_in_once(index: SqliteIndex) -> None:
    clock = Clock()
    accounts = _service(index, clock)
    accounts.add_user("demo", frozenset({Role.ADMIN}), "demo")
    token = accounts.sign_in_link("demo", "demo", ttl_s=60)
    assert accounts.sign_in_with_link(token, "127.0.0.1").user.name == "demo"
    with pytest.raises(SignInRefused):
        accounts.sign_in_with_link(token, "127.0.0.1")
    late = accounts.sign_in_link("demo", "demo", ttl_s=60)
    clock.ns += 61 * S
    with pytest.raises(SignInRefused):
        accounts.sign_in_with_link(late, "127.0.0.1")


def test_bad_names_and_duplicates_are_refused(index: SqliteIndex) -> None:
    accounts = _service(index, Clock())
    with pytest.raises(AccountError, match="lower-case"):
        accounts.add_user("Bad Name", frozenset({Role.ADMIN}), "cli:root")
    accounts.add_user("ada", frozenset({Role.AUDITOR}), "cli:root")
    with pytest.raises(AccountError, match="already exists"):
        accounts.add_user("ada", frozenset({Role.ADMIN}), "cli:root")
