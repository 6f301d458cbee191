"""AES-256-GCM under the STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizar 2015).

Each chunk's 96-bit nonce is ``prefix (7 bytes) || counter (u32 big-endian) || last flag (1 byte)``
as in age and Tink: a chunk cannot be moved (counter), dropped from the end (the last flag
must appear exactly once, on the final chunk), or swapped with a chunk of another segment
(fresh key and prefix per segment; the header's hash is every chunk's associated data).
"""

from __future__ import annotations

import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from agent.evidence.format import KEY_LEN, NONCE_PREFIX_LEN, TAG_LEN

MAX_CHUNKS = 2**32 - 1


class StreamError(Exception):
    """A chunk that does not decrypt, or a stream that is truncated or extended."""


def nonce(prefix: bytes, counter: int, last: bool) -> bytes:
    if len(prefix) != NONCE_PREFIX_LEN:
        raise ValueError("nonce prefix must be 7 bytes")
    if not 0 <= counter <= MAX_CHUNKS:
        raise StreamError("too many chunks in one segment")
    return prefix + struct.pack(">IB", counter, 1 if last else 0)


class StreamEncryptor:
    """Encrypts chunks in order. Not thread-safe: one owner feeds it."""

    def __init__(self, key: bytes, prefix: bytes, aad: bytes) -> None:
        if len(key) != KEY_LEN:
            raise ValueError("content key must be 32 bytes")
        self._aead = AESGCM(key)
        self._prefix = prefix
        self._aad = aad
        self._counter = 0
        self._finished = False

    @property
    def chunks(self) -> int:
        return self._counter

    def encrypt(self, plaintext: bytes, last: bool = False) -> bytes:
        if self._finished:
            raise StreamError("stream already finished")
        ct = self._aead.encrypt(nonce(self._prefix, self._counter, last), plaintext, self._aad)
        self._counter += 1
        self._finished = last
        return ct


class StreamDecryptor:
    """Decrypts chunks in order and insists that the final one carries the last flag."""

    def __init__(self, key: bytes, prefix: bytes, aad: bytes) -> None:
        self._aead = AESGCM(key)
        self._prefix = prefix
        self._aad = aad
        self._counter = 0
        self._finished = False

    @property
    def finished(self) -> bool:
        return self._finished

    def decrypt(self, ciphertext: bytes, last: bool) -> bytes:
        if self._finished:
            raise StreamError(f"chunk {self._counter} follows the final chunk")
        if len(ciphertext) < TAG_LEN:
            raise StreamError(f"chunk {self._counter} is shorter than its tag")
        try:
            pt = self._aead.decrypt(nonce(self._prefix, self._counter, last), ciphertext, self._aad)
        except InvalidTag:
            where = "final " if last else ""
            raise StreamError(
                f"{where}chunk {self._counter} fails authentication (altered, moved, or from another segment)"
            ) from None
        self._counter += 1
        self._finished = last
        return pt
