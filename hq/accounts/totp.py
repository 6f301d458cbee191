"""TOTP second factor (RFC 6238: SHA-1, 6 digits, 30 s steps), one step either side, no replay. Pure."""

from __future__ import annotations

import hmac
from urllib.parse import quote

import pyotp

STEP_S = 30
DIGITS = 6
WINDOW_STEPS = 1  # a code from the step before or after is accepted (clock drift, typing time)
ISSUER = "bodycam HQ"


def new_secret() -> str:
    """A random base32 secret of 160 bits (RFC 4226's recommended length)."""
    return pyotp.random_base32(32)


def code_at(secret: str, step: int) -> str:
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_S).generate_otp(step)


def matching_step(secret: str, code: str, now_s: float, last_used_step: int | None) -> int | None:
    """The time step ``code`` belongs to, within the window around ``now_s`` and after
    ``last_used_step`` (a code once accepted, or an earlier one, is never accepted again), else None."""
    step = find_step(secret, code, now_s)
    if step is None or replayed(step, last_used_step):
        return None
    return step


def replayed(step: int, last_used_step: int | None) -> bool:
    return last_used_step is not None and step <= last_used_step


def find_step(secret: str, code: str, now_s: float) -> int | None:
    """The step of the window around ``now_s`` whose code is ``code``, else None. Every step of
    the window is compared, in constant time, whatever matches first."""
    code = code.strip().replace(" ", "")
    if len(code) != DIGITS or not code.isdigit():
        return None
    current = int(now_s // STEP_S)
    found: int | None = None
    for step in range(current - WINDOW_STEPS, current + WINDOW_STEPS + 1):
        if hmac.compare_digest(code_at(secret, step), code) and found is None:
            found = step
    return found


def provisioning_uri(secret: str, name: str) -> str:
    """The otpauth:// URI an authenticator app reads (as a QR code or typed)."""
    return (f"otpauth://totp/{quote(ISSUER)}:{quote(name)}?secret={secret}&issuer={quote(ISSUER)}"
            f"&algorithm=SHA1&digits={DIGITS}&period={STEP_S}")
