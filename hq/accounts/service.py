"""Accounts of the operations room: adding and managing users, signing in and out, sessions.

Knows no HTTP: the web layer and ``bodycam-hq user`` call it. Every change and every sign-in,
failed or not, is audited (CJIS 5.4.1.1: time, component, event type, user, outcome).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from hq.accounts import lockout, totp
from hq.accounts.lockout import ACCOUNT_POLICY, SOURCE_POLICY, LockoutPolicy
from hq.accounts.passwords import Passwords, generate_password
from hq.accounts.records import NAME_RULE, Role, Session, User, roles_text, valid_name
from hq.accounts.sessions import NS_PER_S, SessionPolicy, expiry
from hq.accounts.store import AccountStore
from hq.audit import Auditor

log = logging.getLogger(__name__)

SIGNIN_FAILED = "Sign-in failed: check your user name, password and the code from your authenticator app."
TOUCH_EVERY_NS = 5 * NS_PER_S  # a session's last activity is written at most this often
LINK_TTL_S = 15 * 60
MAX_SHOWN_NAME = 64


class AccountError(Exception):
    """A refused account change or sign-in; ``str`` is one line for the person who asked."""


class SignInRefused(AccountError):
    """Sign-in refused. The message never says whether the name exists; ``wait_s`` > 0 when locked out."""

    def __init__(self, message: str, wait_s: float = 0.0) -> None:
        super().__init__(message)
        self.wait_s = wait_s


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a new or reset user is given once: shown, never stored in the clear."""

    name: str
    password: str
    totp_secret: str

    @property
    def totp_uri(self) -> str:
        return totp.provisioning_uri(self.totp_secret, self.name)


@dataclass(frozen=True, slots=True)
class SignedIn:
    """A new session: ``session_id`` goes in the cookie (only its hash is stored)."""

    session_id: str
    session: Session
    user: User


def session_hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def _shown(name: str) -> str:
    """A submitted user name as the audit log keeps it: bounded (text from outside)."""
    return name[:MAX_SHOWN_NAME]


class AccountService:
    """Thread-safe (state is in the store). ``audit`` names the component (``hq-web``, ``hq-cli``)."""

    def __init__(
        self,
        store: AccountStore,
        audit: Auditor,
        now_ns: Callable[[], int],
        passwords: Passwords | None = None,
        sessions: SessionPolicy | None = None,
        account_lockout: LockoutPolicy = ACCOUNT_POLICY,
        source_lockout: LockoutPolicy = SOURCE_POLICY,
    ) -> None:
        self.store = store
        self.audit = audit
        self.now_ns = now_ns
        self.passwords = passwords or Passwords()
        self.policy = sessions or SessionPolicy()
        self._account_lockout = account_lockout
        self._source_lockout = source_lockout

    # -- managing users -------------------------------------------------------------------

    def add_user(self, name: str, roles: frozenset[Role], actor: str) -> Credentials:
        if not valid_name(name):
            raise AccountError(NAME_RULE)
        if not roles:
            raise AccountError("give at least one role (--role operator, supervisor, auditor or admin)")
        creds = Credentials(name, generate_password(), totp.new_secret())
        user = User(name=name, roles=roles, password_hash=self.passwords.hash(creds.password),
                    totp_secret=creds.totp_secret, created_ns=self.now_ns())
        if not self.store.add_user(user):
            self.audit.record("user-add", actor, f"user:{name}", "refused", reason="exists")
            raise AccountError(f"a user named {name} already exists (bodycam-hq user list)")
        self.audit.record("user-add", actor, f"user:{name}", "ok", roles=roles_text(roles))
        return creds

    def _existing(self, name: str) -> User:
        user = self.store.user(name)
        if user is None:
            raise AccountError(f"no user named {name} (bodycam-hq user list)")
        return user

    def disable(self, name: str, actor: str) -> int:
        """Disable ``name`` and end its sessions; returns how many were ended."""
        self._existing(name)
        self.store.set_disabled(name, self.now_ns())
        ended = self.store.end_sessions(name, self.now_ns(), "disabled")
        self.audit.record("user-disable", actor, f"user:{name}", "ok", sessions_ended=ended)
        return ended

    def enable(self, name: str, actor: str) -> None:
        self._existing(name)
        self.store.set_disabled(name, None)
        self.audit.record("user-enable", actor, f"user:{name}", "ok")

    def reset(self, name: str, actor: str) -> Credentials:
        """A new password and a new TOTP secret; every session of ``name`` ends."""
        self._existing(name)
        creds = Credentials(name, generate_password(), totp.new_secret())
        self.store.reset_credentials(name, self.passwords.hash(creds.password), creds.totp_secret)
        ended = self.store.end_sessions(name, self.now_ns(), "reset")
        self.store.clear_failures(f"user:{name}")
        self.audit.record("user-reset", actor, f"user:{name}", "ok", sessions_ended=ended)
        return creds

    def set_roles(self, name: str, roles: frozenset[Role], actor: str) -> None:
        before = self._existing(name).roles
        if not roles:
            raise AccountError("give at least one role")
        self.store.set_roles(name, roles)
        ended = self.store.end_sessions(name, self.now_ns(), "roles-changed")
        self.audit.record("user-roles", actor, f"user:{name}", "ok", before=roles_text(before),
                          after=roles_text(roles), sessions_ended=ended)

    def users(self) -> list[User]:
        return self.store.users()

    def sign_in_link(self, name: str, actor: str, ttl_s: float = LINK_TTL_S) -> str:
        """A one-time token that signs ``name`` in once within ``ttl_s`` (its hash is stored)."""
        self._existing(name)
        token = secrets.token_urlsafe(32)
        self.store.add_link(session_hash(token), name, self.now_ns() + int(ttl_s * NS_PER_S))
        self.audit.record("signin-link-create", actor, f"user:{name}", "ok", ttl_s=ttl_s)
        return token

    # -- signing in and out ---------------------------------------------------------------

    def sign_in(self, name: str, password: str, code: str, source: str) -> SignedIn:
        """A session for ``name``, or SignInRefused with the same message whatever was wrong."""
        now = self.now_ns()
        name = name.strip()
        account_key, source_key = f"user:{_shown(name)}", f"source:{source}"
        account_failures, source_failures = self.store.failures(account_key), self.store.failures(source_key)
        wait_s = max(lockout.wait_s(account_failures, self._account_lockout, now),
                     lockout.wait_s(source_failures, self._source_lockout, now))
        user = self.store.user(name) if valid_name(name) else None
        password_ok = self.passwords.verify(user.password_hash if user else None, password)  # same cost either way
        step = totp.find_step(user.totp_secret, code, now / NS_PER_S) if user else None
        if wait_s > 0:
            self.audit.record("signin", _shown(name), "ops-room", "failed", reason="locked-out", source=source,
                              wait_s=round(wait_s, 1))
            raise SignInRefused(f"Too many failed sign-ins: wait {max(1, round(wait_s))} s and try again.", wait_s)
        reason = self._refusal(user, password_ok, step, user.totp_last_step if user else None)
        if reason is None and user is not None and step is not None and not self.store.use_totp_step(user.name, step):
            reason = "code-replayed"
        if reason is not None or user is None:
            self.store.set_failures(account_key, lockout.after_failure(account_failures, self._account_lockout, now))
            self.store.set_failures(source_key, lockout.after_failure(source_failures, self._source_lockout, now))
            self.audit.record("signin", _shown(name), "ops-room", "failed", reason=reason, source=source)
            raise SignInRefused(SIGNIN_FAILED)
        self.store.clear_failures(account_key)
        if self.passwords.needs_rehash(user.password_hash):
            self.store.set_password_hash(user.name, self.passwords.hash(password))
            log.info("the password hash of %s was upgraded to the current argon2id parameters", user.name)
        return self._open_session(user, source, "password+totp")

    @staticmethod
    def _refusal(user: User | None, password_ok: bool, step: int | None, last_step: int | None) -> str | None:
        """Why a sign-in fails, for the audit log only (the person is told nothing more)."""
        if user is None:
            return "unknown-user"
        if not password_ok:
            return "bad-password"
        if step is None:
            return "bad-code"
        if totp.replayed(step, last_step):
            return "code-replayed"
        if not user.active:
            return "disabled"
        return None

    def sign_in_with_link(self, token: str, source: str) -> SignedIn:
        name = self.store.take_link(session_hash(token), self.now_ns())
        user = self.store.user(name) if name is not None else None
        if user is None or not user.active:
            self.audit.record("signin", name or "-", "ops-room", "failed", reason="bad-link", source=source)
            raise SignInRefused("This sign-in link is not valid: it was used already, has expired, or never existed.")
        return self._open_session(user, source, "one-time-link")

    def _open_session(self, user: User, source: str, method: str) -> SignedIn:
        now = self.now_ns()
        session_id = secrets.token_urlsafe(32)  # 256 bits
        session = Session(id_sha256=session_hash(session_id), user=user.name, created_ns=now, last_seen_ns=now,
                          csrf_token=secrets.token_urlsafe(32), source=source)
        self.store.add_session(session)
        self.audit.record("signin", user.name, f"session:{session.id_sha256[:16]}", "ok", source=source,
                          method=method, roles=roles_text(user.roles))
        return SignedIn(session_id, session, user)

    def resume(self, session_id: str, touch: bool = True) -> tuple[Session, User] | None:
        """The live session a cookie names and its user, or None. A session found past its idle or
        absolute timeout, or whose user was disabled, is ended here (and the timeout audited).
        ``touch`` False checks without counting as activity (a live stream is not the user acting,
        so it never keeps a session from its idle timeout)."""
        now = self.now_ns()
        session = self.store.session(session_hash(session_id))
        if session is None or session.ended_ns is not None:
            return None
        user = self.store.user(session.user)
        reason = expiry(session.created_ns, session.last_seen_ns, now, self.policy)
        if reason is None and (user is None or not user.active):
            reason = "disabled"
        if reason is not None:
            if self.store.end_session(session.id_sha256, now, reason):
                self.audit.record("session-timeout" if reason != "disabled" else "session-end", session.user,
                                  f"session:{session.id_sha256[:16]}", "ok", reason=reason)
            return None
        if touch and now - session.last_seen_ns >= TOUCH_EVERY_NS:
            self.store.touch_session(session.id_sha256, now)
        assert user is not None
        return session, user

    def sign_out(self, session: Session) -> None:
        if self.store.end_session(session.id_sha256, self.now_ns(), "signed-out"):
            self.audit.record("signout", session.user, f"session:{session.id_sha256[:16]}", "ok")
