"""Public-key sealing to headquarters with HPKE (RFC 9180, Base mode).

Two things are sealed: each segment's fresh content key, and the metadata that reveals
people or places. The device holds only headquarters' public key, so it can seal but never
open. Suites: DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / AES-256-GCM by default, and
DHKEM(P-256, HKDF-SHA256) / HKDF-SHA256 / AES-256-GCM for the ``fips`` profile; the suite is
chosen by the type of headquarters' key.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import ec, x25519

from agent.evidence.keys import HqPrivateKey, HqPublicKey

SUITE_X25519 = "DHKEM(X25519,HKDF-SHA256)/HKDF-SHA256/AES-256-GCM"
SUITE_P256 = "DHKEM(P-256,HKDF-SHA256)/HKDF-SHA256/AES-256-GCM"
# A wrapped 32-byte content key: KEM encapsulation (32 or 65 bytes) + 32-byte key + 16-byte tag.
WRAPPED_KEY_BYTES = {SUITE_X25519: 32 + 32 + 16, SUITE_P256: 65 + 32 + 16}


class SealError(Exception):
    """Sealed data that does not open under the given key and context."""


def suite_name(key: HqPublicKey | HqPrivateKey) -> str:
    if isinstance(key, x25519.X25519PublicKey | x25519.X25519PrivateKey):
        return SUITE_X25519
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        return SUITE_P256
    raise SealError(f"unsupported key type {type(key).__name__}")


def _suite(name: str) -> hpke.Suite:
    if name == SUITE_X25519:
        return hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
    if name == SUITE_P256:
        return hpke.Suite(hpke.KEM.P256, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
    raise SealError(f"unknown HPKE suite {name!r}")


def seal(plaintext: bytes, public_key: HqPublicKey, info: bytes) -> bytes:
    """HPKE single-shot encryption: returns ``enc || ciphertext``."""
    return _suite(suite_name(public_key)).encrypt(plaintext, public_key, info=info)


def open_sealed(sealed: bytes, private_key: HqPrivateKey, info: bytes, suite: str | None = None) -> bytes:
    name = suite or suite_name(private_key)
    if name != suite_name(private_key):
        raise SealError(f"sealed with {name}, but the key given is for {suite_name(private_key)}")
    try:
        return _suite(name).decrypt(sealed, private_key, info=info)
    except Exception as exc:  # cryptography raises InvalidTag or ValueError depending on the fault
        raise SealError("sealed data does not open with this key (wrong key, or tampered)") from exc
