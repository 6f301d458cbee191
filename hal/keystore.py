"""The key store protocol: the device identity key, usable but never exported.

A file-backed store comes first; a secure element or TPM fits the same protocol, since the
agent only ever asks for the public key and for signatures.
"""

from __future__ import annotations

from typing import Protocol


class KeyStore(Protocol):
    def public_key_raw(self) -> bytes:
        """The 32-byte Ed25519 public key."""
        ...

    def sign(self, message: bytes) -> bytes:
        """A 64-byte Ed25519 signature over ``message``."""
        ...
