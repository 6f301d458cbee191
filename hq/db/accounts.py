"""The account store in the index (``hq.accounts.store.AccountStore`` over SQLAlchemy Core).

Shares the index's engine: users and sessions live in the same database as the evidence, so every
node sees one sign-in, one lockout and one logout.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, RowMapping

from hq.accounts.lockout import Failures
from hq.accounts.records import Role, Session, User, parse_roles, roles_text
from hq.db import tx
from hq.db.schema import signin_failures, signin_links, users, web_sessions


def _user(row: RowMapping) -> User:
    return User(name=row["name"], roles=parse_roles(row["roles"]), password_hash=row["password_hash"],
                totp_secret=row["totp_secret"], created_ns=row["created_utc_ns"],
                totp_last_step=row["totp_last_step"], disabled_ns=row["disabled_utc_ns"])


def _session(row: RowMapping) -> Session:
    return Session(id_sha256=row["id_sha256"], user=row["user_name"], created_ns=row["created_utc_ns"],
                   last_seen_ns=row["last_seen_utc_ns"], csrf_token=row["csrf_token"], source=row["source"],
                   ended_ns=row["ended_utc_ns"], end_reason=row["end_reason"])


class SqlAccountStore:
    """Thread-safe: each call is one transaction on a pooled connection."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._writer = tx.writer(engine)

    def _write(self, doing: str) -> AbstractContextManager[Connection]:
        return tx.transaction(self._writer, doing, write=True)

    def _rows(self, doing: str, query: sa.Executable) -> list[RowMapping]:
        return tx.rows(self._engine, doing, query)

    def _update(self, doing: str, query: Any) -> int:
        with self._write(doing) as conn:
            return int(conn.execute(query).rowcount)

    # -- users ----------------------------------------------------------------------------

    def add_user(self, user: User) -> bool:
        with self._write(f"adding user {user.name}") as conn:
            if conn.execute(sa.select(users.c.name).where(users.c.name == user.name)).first() is not None:
                return False
            conn.execute(users.insert().values(
                name=user.name, roles=roles_text(user.roles), password_hash=user.password_hash,
                totp_secret=user.totp_secret, totp_last_step=user.totp_last_step, created_utc_ns=user.created_ns,
                disabled_utc_ns=user.disabled_ns))
            return True

    def user(self, name: str) -> User | None:
        rows = self._rows("reading a user", users.select().where(users.c.name == name))
        return _user(rows[0]) if rows else None

    def users(self) -> list[User]:
        return [_user(r) for r in self._rows("listing users", users.select().order_by(users.c.name))]

    def set_roles(self, name: str, roles: frozenset[Role]) -> bool:
        return self._update(f"changing the roles of {name}",
                            users.update().where(users.c.name == name).values(roles=roles_text(roles))) == 1

    def set_password_hash(self, name: str, password_hash: str) -> None:
        self._update(f"rehashing the password of {name}",
                     users.update().where(users.c.name == name).values(password_hash=password_hash))

    def reset_credentials(self, name: str, password_hash: str, totp_secret: str) -> bool:
        return self._update(f"resetting {name}", users.update().where(users.c.name == name).values(
            password_hash=password_hash, totp_secret=totp_secret, totp_last_step=None)) == 1

    def set_disabled(self, name: str, disabled_ns: int | None) -> bool:
        return self._update(f"disabling {name}", users.update().where(users.c.name == name)
                            .values(disabled_utc_ns=disabled_ns)) == 1

    def use_totp_step(self, name: str, step: int) -> bool:
        """One row update: two nodes given the same code accept it at most once."""
        u = users.c
        return self._update(f"recording the code of {name}", users.update().where(
            u.name == name, sa.or_(u.totp_last_step.is_(None), u.totp_last_step < step),
        ).values(totp_last_step=step)) == 1

    # -- lockout --------------------------------------------------------------------------

    def failures(self, key: str) -> Failures | None:
        rows = self._rows("reading sign-in failures", signin_failures.select().where(signin_failures.c.key == key))
        return Failures(int(rows[0]["failures"]), int(rows[0]["last_utc_ns"])) if rows else None

    def set_failures(self, key: str, failures: Failures) -> None:
        with self._write("recording a sign-in failure") as conn:
            done = conn.execute(signin_failures.update().where(signin_failures.c.key == key).values(
                failures=failures.count, last_utc_ns=failures.last_ns)).rowcount
            if done == 0:
                conn.execute(signin_failures.insert().values(key=key, failures=failures.count,
                                                             last_utc_ns=failures.last_ns))

    def clear_failures(self, key: str) -> None:
        with self._write("clearing sign-in failures") as conn:
            conn.execute(signin_failures.delete().where(signin_failures.c.key == key))

    # -- sessions -------------------------------------------------------------------------

    def add_session(self, session: Session) -> None:
        with self._write(f"opening a session of {session.user}") as conn:
            conn.execute(web_sessions.insert().values(
                id_sha256=session.id_sha256, user_name=session.user, created_utc_ns=session.created_ns,
                last_seen_utc_ns=session.last_seen_ns, csrf_token=session.csrf_token, source=session.source))

    def session(self, id_sha256: str) -> Session | None:
        rows = self._rows("reading a session", web_sessions.select().where(web_sessions.c.id_sha256 == id_sha256))
        return _session(rows[0]) if rows else None

    def touch_session(self, id_sha256: str, now_ns: int) -> None:
        s = web_sessions.c
        self._update("marking a session active", web_sessions.update().where(
            s.id_sha256 == id_sha256, s.ended_utc_ns.is_(None), s.last_seen_utc_ns < now_ns,
        ).values(last_seen_utc_ns=now_ns))

    def end_session(self, id_sha256: str, now_ns: int, reason: str) -> bool:
        s = web_sessions.c
        return self._update("ending a session", web_sessions.update().where(
            s.id_sha256 == id_sha256, s.ended_utc_ns.is_(None)).values(ended_utc_ns=now_ns, end_reason=reason)) == 1

    def end_sessions(self, name: str, now_ns: int, reason: str) -> int:
        s = web_sessions.c
        return self._update(f"ending the sessions of {name}", web_sessions.update().where(
            s.user_name == name, s.ended_utc_ns.is_(None)).values(ended_utc_ns=now_ns, end_reason=reason))

    # -- one-time sign-in links -----------------------------------------------------------

    def add_link(self, token_sha256: str, name: str, expires_ns: int) -> None:
        with self._write(f"adding a sign-in link for {name}") as conn:
            conn.execute(signin_links.insert().values(token_sha256=token_sha256, user_name=name,
                                                      expires_utc_ns=expires_ns))

    def take_link(self, token_sha256: str, now_ns: int) -> str | None:
        k = signin_links.c
        with self._write("using a sign-in link") as conn:
            row = conn.execute(sa.select(k.user_name).where(
                k.token_sha256 == token_sha256, k.used_utc_ns.is_(None), k.expires_utc_ns > now_ns)).first()
            if row is None:
                return None
            taken = conn.execute(signin_links.update().where(k.token_sha256 == token_sha256, k.used_utc_ns.is_(None))
                                 .values(used_utc_ns=now_ns)).rowcount
            return str(row[0]) if taken == 1 else None
