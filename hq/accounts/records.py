"""What the account store keeps: users with their roles, sessions, sign-in failures, one-time links."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    """What a user may do in the operations room (a user may hold several)."""

    OPERATOR = "operator"  # map, units, alerts, live view
    SUPERVISOR = "supervisor"  # + evidence search and playback
    AUDITOR = "auditor"  # audit trails, read-only; no playback unless also supervisor
    ADMIN = "admin"  # users, enrolment and revocation of units


NAME_RULE = "a user name is 1 to 64 characters: lower-case letters, digits, '.', '_' or '-', starting with a letter"
_NAME = re.compile(r"[a-z][a-z0-9._-]{0,63}")


def valid_name(name: str) -> bool:
    return _NAME.fullmatch(name) is not None


def parse_roles(text: str) -> frozenset[Role]:
    """Roles stored as a space-separated list."""
    return frozenset(Role(r) for r in text.split())


def roles_text(roles: frozenset[Role]) -> str:
    return " ".join(sorted(r.value for r in roles))


@dataclass(frozen=True, slots=True)
class User:
    name: str
    roles: frozenset[Role]
    password_hash: str
    totp_secret: str
    created_ns: int
    totp_last_step: int | None = None
    disabled_ns: int | None = None

    @property
    def active(self) -> bool:
        return self.disabled_ns is None


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in browser. The store keeps the SHA-256 of the cookie's id, never the id itself."""

    id_sha256: str
    user: str
    created_ns: int
    last_seen_ns: int
    csrf_token: str
    source: str
    ended_ns: int | None = None
    end_reason: str | None = None
