"""Password hashes: argon2id with OWASP's parameters, rehashed on sign-in when they change."""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

# OWASP Password Storage Cheat Sheet (argon2id): m=19 MiB, t=2, p=1 is its minimum configuration;
# the first of its equivalent rows. Raise them here and existing hashes are upgraded at sign-in.
MEMORY_KIB = 19 * 1024
TIME_COST = 2
PARALLELISM = 1
MIN_LENGTH = 12
GENERATED_BYTES = 15  # 20 URL-safe characters, 120 bits


class Passwords:
    """Hashes and checks passwords. Thread-safe (argon2's hasher holds no state)."""

    def __init__(self, memory_kib: int = MEMORY_KIB, time_cost: int = TIME_COST, parallelism: int = PARALLELISM
                 ) -> None:
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism,
                                      type=Type.ID)
        # Checked when the name is unknown, so an unknown name costs the same time as a known one.
        self._dummy = self._hasher.hash(secrets.token_urlsafe(GENERATED_BYTES))

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, stored: str | None, password: str) -> bool:
        """Whether ``password`` matches ``stored``; with ``stored`` None the same work is done
        against a dummy hash and the answer is False."""
        try:
            return self._hasher.verify(stored or self._dummy, password) and stored is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored: str) -> bool:
        return self._hasher.check_needs_rehash(stored)


def generate_password() -> str:
    return secrets.token_urlsafe(GENERATED_BYTES)


def weak_reason(password: str) -> str | None:
    """Why a chosen password is refused (NIST SP 800-63B: length, not composition rules), or None."""
    if len(password) < MIN_LENGTH:
        return f"a password needs at least {MIN_LENGTH} characters"
    if len(password) > 256:
        return "a password may have at most 256 characters"
    return None
