"""Technician login by challenge-response: nonces, trusted keys, certificates, lockout. Pure.

The unit sends a fresh nonce; the technician's client signs
``CTX_LOGIN + device_id + NUL + nonce`` with an Ed25519 key that headquarters issued. The unit
accepts the signature if the public key is listed in its config, or if it comes with a
certificate signed by headquarters' technician CA naming this unit and valid now. Nothing here
is a password or a shared secret, and no key works on every unit: a listed key works where it is
listed, a certificate names its units one by one.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.evidence import canonical
from agent.evidence.keys import fingerprint, public_der, verify_signature
from agent.unitapi.errors import Refused

CTX_LOGIN = b"bodycam/v1/console-login\x00"
CTX_CERT = b"bodycam/v1/technician-cert\x00"
CERT_TYPE = "bodycam-technician-cert"
CERT_VERSION = 1
NONCE_BYTES = 32
NONCE_TTL_NS = 120_000_000_000  # a challenge must be answered within two minutes
MAX_CERT_BYTES = 4096
_NAME = re.compile(r"[A-Za-z0-9 ._@-]{1,64}")
_HEX = re.compile(r"[0-9a-fA-F]*")


class AuthError(Refused):
    """A refused login, with a stable ``code`` for scripts (the message never echoes secrets)."""


def login_message(device_id: str, nonce: bytes) -> bytes:
    """The exact bytes a technician signs to log in to ``device_id`` with ``nonce``."""
    return CTX_LOGIN + device_id.encode() + b"\x00" + nonce


def raw_public(key: ed25519.Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_fingerprint(key: ed25519.Ed25519PublicKey) -> str:
    """SHA-256 hex of the DER SubjectPublicKeyInfo, as every bodycam key is named."""
    return fingerprint(public_der(key))


@dataclass(frozen=True, slots=True)
class Technician:
    """Who logged in: a name for the audit log, the key's fingerprint, and how it was trusted."""

    name: str
    fingerprint: str
    via: str  # "config" or "certificate"
    not_after_utc_ns: int | None = None

    @property
    def actor(self) -> str:
        return f"console:{self.name}:{self.fingerprint[:16]}"


# -- certificates ------------------------------------------------------------------------------


def issue_certificate(
    ca: ed25519.Ed25519PrivateKey,
    *,
    technician: str,
    public_key: ed25519.Ed25519PublicKey,
    devices: Iterable[str],
    not_before_utc_ns: int,
    not_after_utc_ns: int,
) -> bytes:
    """Headquarters' side: a certificate (base64 text) letting ``technician`` log in to ``devices``."""
    body = _cert_body(technician, raw_public(public_key), list(devices), not_before_utc_ns, not_after_utc_ns)
    return base64.b64encode(body + ca.sign(CTX_CERT + body))


def _cert_body(name: str, raw: bytes, devices: list[str], not_before: int, not_after: int) -> bytes:
    if not _NAME.fullmatch(name):
        raise ValueError(f"technician name {name!r} is not 1-64 of A-Za-z0-9 ._@-")
    if not devices or any(not d or d == "*" for d in devices):
        raise ValueError("a certificate names its units one by one (no empty list, no wildcard)")
    if not 0 <= not_before < not_after:
        raise ValueError("not_after must follow not_before")
    return canonical.dumps({
        "type": CERT_TYPE, "version": CERT_VERSION, "technician": name, "public_key": raw.hex(),
        "devices": sorted(set(devices)), "not_before_utc_ns": not_before, "not_after_utc_ns": not_after,
    })


def check_certificate(
    cert_b64: str, ca: ed25519.Ed25519PublicKey, device_id: str, raw_key: bytes, utc_ns: int
) -> dict[str, Any]:
    """The certificate's fields if it admits ``raw_key`` to ``device_id`` at ``utc_ns``; else AuthError."""
    if len(cert_b64) > MAX_CERT_BYTES:
        raise AuthError("bad-certificate", "certificate too long")
    try:
        blob = base64.b64decode(cert_b64, validate=True)
    except (binascii.Error, ValueError):
        raise AuthError("bad-certificate", "certificate is not base64") from None
    body, sig = blob[:-64], blob[-64:]
    if len(blob) <= 64 or not verify_signature(ca, sig, CTX_CERT + body):
        raise AuthError("bad-certificate", "certificate is not signed by this unit's technician CA")
    try:
        doc = canonical.loads(body)
    except canonical.CanonicalError:
        raise AuthError("bad-certificate", "certificate body is not canonical JSON") from None
    if not isinstance(doc, dict) or doc.get("type") != CERT_TYPE or doc.get("version") != CERT_VERSION:
        raise AuthError("bad-certificate", "not a version 1 technician certificate")
    devices, name = doc.get("devices"), doc.get("technician")
    nb, na = doc.get("not_before_utc_ns"), doc.get("not_after_utc_ns")
    if not (isinstance(devices, list) and isinstance(name, str) and type(nb) is int and type(na) is int):
        raise AuthError("bad-certificate", "certificate fields are missing or mistyped")
    if doc.get("public_key") != raw_key.hex():
        raise AuthError("bad-certificate", "certificate is for another key")
    if device_id not in devices:
        raise AuthError("bad-certificate", f"certificate does not name unit {device_id}")
    if not nb <= utc_ns < na:
        raise AuthError("certificate-expired", "certificate is not valid at the unit's current time (see `time`)")
    return doc


# -- trust -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrustStore:
    """The technician keys a unit trusts: listed ones by fingerprint, and an optional CA."""

    device_id: str
    listed: dict[str, tuple[str, ed25519.Ed25519PublicKey]] = field(default_factory=dict)  # fp -> (name, key)
    ca: ed25519.Ed25519PublicKey | None = None

    @property
    def empty(self) -> bool:
        return not self.listed and self.ca is None

    def resolve(self, raw_key: bytes, cert_b64: str | None, utc_ns: int) -> tuple[Technician, ed25519.Ed25519PublicKey]:
        """The technician behind ``raw_key`` if this unit trusts it now; AuthError otherwise."""
        try:
            key = ed25519.Ed25519PublicKey.from_public_bytes(raw_key)
        except ValueError:
            raise AuthError("bad-request", "key must be 32 bytes of Ed25519 public key, hex") from None
        fp = key_fingerprint(key)
        if fp in self.listed:
            return Technician(self.listed[fp][0], fp, "config"), key
        if cert_b64 and self.ca is not None:
            doc = check_certificate(cert_b64, self.ca, self.device_id, raw_key, utc_ns)
            return Technician(str(doc["technician"]), fp, "certificate", int(doc["not_after_utc_ns"])), key
        raise AuthError("unknown-key", f"key {fp[:16]} is not trusted by this unit")


def parse_public_pems(data: bytes) -> list[ed25519.Ed25519PublicKey]:
    """Every Ed25519 public key in a PEM text (ValueError if none, or one is of another kind)."""
    blocks = re.findall(rb"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", data, re.S)
    if not blocks:
        raise ValueError("no PEM public key found")
    keys = []
    for block in blocks:
        key = serialization.load_pem_public_key(block)
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise ValueError("not an Ed25519 public key")
        keys.append(key)
    return keys


# -- lockout -----------------------------------------------------------------------------------


@dataclass
class Lockout:
    """Failed logins in a row on one line, and until when logins are refused. Pure: ``now_ns``
    is the caller's monotonic time. After ``after`` failures the line is locked for ``base_ns``,
    doubling with each further failure up to ``max_ns``; a success clears it."""

    after: int
    base_ns: int
    max_ns: int
    failures: int = 0
    locked_until_ns: int | None = None

    def remaining_ns(self, now_ns: int) -> int:
        """How long logins are still refused (0: not locked)."""
        if self.locked_until_ns is None or now_ns >= self.locked_until_ns:
            return 0
        return self.locked_until_ns - now_ns

    def failed(self, now_ns: int) -> int:
        """Count a failure; returns the lock it starts (0: none yet)."""
        self.failures += 1
        lock = self.current_lock_ns()
        if lock:
            self.locked_until_ns = now_ns + lock
        return lock

    def succeeded(self) -> None:
        self.failures = 0
        self.locked_until_ns = None

    def current_lock_ns(self) -> int:
        """The length of the lock the failures so far earn (0: below ``after``)."""
        if self.failures < self.after:
            return 0
        return min(self.max_ns, self.base_ns << min(32, self.failures - self.after))

    def to_record(self, now_ns: int, utc_ns: int) -> dict[str, int]:
        """What survives a restart: the failure count and, in UTC, until when logins are refused."""
        return {"failures": self.failures, "locked_until_utc_ns": utc_ns + self.remaining_ns(now_ns)}

    def restore(self, record: object, now_ns: int, utc_ns: int) -> None:
        """Take up a saved :meth:`to_record` after a restart (ValueError if it is not one).

        The remaining lock is the saved end minus the current UTC, but never longer than the
        lock the failures earn: a clock set back cannot lengthen it past that, and monotonic
        time does not survive a reboot.
        """
        if not isinstance(record, dict):
            raise ValueError("not an object")
        failures, until = record.get("failures"), record.get("locked_until_utc_ns")
        if type(failures) is not int or type(until) is not int or failures < 0:
            raise ValueError("failures and locked_until_utc_ns must be whole numbers")
        self.failures = min(failures, 1 << 20)
        remaining = max(0, min(self.current_lock_ns(), until - utc_ns))
        self.locked_until_ns = now_ns + remaining if remaining else None


# -- one line's login state --------------------------------------------------------------------


@dataclass
class Challenge:
    nonce: bytes
    issued_ns: int


class Authenticator:
    """One line's challenge and lockout. Pure: randomness and time come from the caller.

    ``on_lockout_change(lockout, now_ns)`` is called after every change of the lockout (a
    failure, or a success that cleared failures), so the caller can persist it.
    Not thread-safe: the console thread of that line owns it.
    """

    def __init__(self, trust: TrustStore, lockout: Lockout,
                 on_lockout_change: Callable[[Lockout, int], None] | None = None) -> None:
        self.trust = trust
        self.lockout = lockout
        self._on_change = on_lockout_change
        self._challenge: Challenge | None = None

    def challenge(self, nonce: bytes, now_ns: int) -> bytes:
        """Start a login with ``nonce`` (fresh random bytes); an earlier challenge is forgotten."""
        if len(nonce) != NONCE_BYTES:
            raise ValueError(f"nonce must be {NONCE_BYTES} bytes")
        remaining = self.lockout.remaining_ns(now_ns)
        if remaining:
            raise AuthError("locked", f"too many failed logins: try again in {_secs(remaining)} s")
        self._challenge = Challenge(nonce, now_ns)
        return nonce

    def respond(self, key_hex: str, signature_hex: str, cert_b64: str | None, now_ns: int, utc_ns: int) -> Technician:
        """Check the answer to the current challenge. Each challenge is answered once, right or wrong."""
        remaining = self.lockout.remaining_ns(now_ns)
        if remaining:
            raise AuthError("locked", f"too many failed logins: try again in {_secs(remaining)} s")
        challenge, self._challenge = self._challenge, None
        if challenge is None or now_ns - challenge.issued_ns > NONCE_TTL_NS:
            raise AuthError("no-challenge", "no pending challenge: send `login` first, then answer it")
        try:
            if not (_hex_of(key_hex, 32) and _hex_of(signature_hex, 64)):
                raise AuthError("bad-request", "login KEY SIGNATURE: 64 and 128 hex digits")
            tech, key = self.trust.resolve(bytes.fromhex(key_hex), cert_b64, utc_ns)
            if not verify_signature(key, bytes.fromhex(signature_hex), login_message(self.trust.device_id,
                                                                                     challenge.nonce)):
                raise AuthError("bad-signature", "signature does not verify for this unit and challenge")
        except AuthError as exc:
            lock = self.lockout.failed(now_ns)
            self._changed(now_ns)
            if lock:
                raise AuthError(exc.code, f"{exc}; logins refused for {_secs(lock)} s") from None
            raise
        if self.lockout.failures:
            self.lockout.succeeded()
            self._changed(now_ns)
        return tech

    def _changed(self, now_ns: int) -> None:
        if self._on_change is not None:
            self._on_change(self.lockout, now_ns)

    def forget(self) -> None:
        self._challenge = None


def _hex_of(text: str, n_bytes: int) -> bool:
    return len(text) == 2 * n_bytes and _HEX.fullmatch(text) is not None


def _secs(ns: int) -> str:
    return f"{max(1, -(-ns // 1_000_000_000))}"
