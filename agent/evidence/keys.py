"""Key files: the device identity (Ed25519) and headquarters' encryption key (X25519 or P-256).

Private keys are written 0600 through a file descriptor opened with that mode, never printed
and never logged; loading one that others can read is refused.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519

PRIVATE_MODE = 0o600

HqPrivateKey = x25519.X25519PrivateKey | ec.EllipticCurvePrivateKey
HqPublicKey = x25519.X25519PublicKey | ec.EllipticCurvePublicKey


class KeyFileError(Exception):
    """A key file that is missing, unreadable, of the wrong kind, or too widely readable."""


def fingerprint(public_der: bytes) -> str:
    """SHA-256 hex of a public key's DER SubjectPublicKeyInfo: how keys are named everywhere."""
    return hashlib.sha256(public_der).hexdigest()


def public_der(key: ed25519.Ed25519PublicKey | HqPublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def public_pem(key: ed25519.Ed25519PublicKey | HqPublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _write_private(path: Path, pem: bytes, overwrite: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, PRIVATE_MODE)
    except FileExistsError:
        raise KeyFileError(f"{path} exists; refusing to overwrite a private key") from None
    except OSError as exc:
        raise KeyFileError(f"creating private key {path}: {exc.strerror}") from exc
    try:
        os.fchmod(fd, PRIVATE_MODE)
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_public(path: Path, pem: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(pem)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _read_private(path: Path) -> bytes:
    try:
        st = path.stat()
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"reading private key {path}: {exc.strerror}") from exc
    if b"PUBLIC KEY-----" in data and b"PRIVATE KEY-----" not in data:  # before the mode: .pub files are 0644
        raise KeyFileError(f"{path} is a public key; a private key is needed here "
                           "(hq.key rather than hq.pub, device.key rather than device.pub)")
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"{path} is readable by others (mode {stat.S_IMODE(st.st_mode):04o}); run chmod 600 on it"
        )
    return data


def _read_public(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"reading public key {path}: {exc.strerror}") from exc


# -- device identity -------------------------------------------------------------------------


def generate_device_key(key_path: Path, pub_path: Path, overwrite: bool = False) -> str:
    """Create the device's Ed25519 identity; return the public key's fingerprint."""
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_private(key_path, pem, overwrite)
    pub = key.public_key()
    _write_public(pub_path, public_pem(pub))
    return fingerprint(public_der(pub))


def load_device_public(path: Path) -> ed25519.Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(_read_public(path))
    except ValueError as exc:
        raise KeyFileError(f"{path} is not a PEM public key") from exc
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise KeyFileError(f"{path} is not an Ed25519 device key")
    return key


def verify_signature(public: ed25519.Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    try:
        public.verify(signature, message)
    except InvalidSignature:
        return False
    return True


@dataclass
class FileKeyStore:
    """The device key held in a 0600 PEM file; implements ``hal.keystore.KeyStore``.

    The private key object stays inside this instance: there is no method that returns it.
    Thread-safe: signing has no shared mutable state.
    """

    path: Path

    def __post_init__(self) -> None:
        try:
            key = serialization.load_pem_private_key(_read_private(self.path), password=None)
        except ValueError as exc:
            raise KeyFileError(f"{self.path} is not a PEM private key") from exc
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise KeyFileError(f"{self.path} is not an Ed25519 device key")
        self._key = key
        self._public = key.public_key()

    def __repr__(self) -> str:
        return f"FileKeyStore({str(self.path)!r})"

    def public_key_raw(self) -> bytes:
        return self._public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    def public_key(self) -> ed25519.Ed25519PublicKey:
        return self._public

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)


# -- headquarters' encryption key ------------------------------------------------------------


def generate_hq_key(key_path: Path, pub_path: Path, profile: str = "default", overwrite: bool = False) -> str:
    """Create headquarters' HPKE key pair: X25519 by default, P-256 for the ``fips`` profile."""
    key: HqPrivateKey
    if profile == "default":
        key = x25519.X25519PrivateKey.generate()
    elif profile == "fips":
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        raise KeyFileError(f"unknown profile {profile!r} (default, fips)")
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_private(key_path, pem, overwrite)
    pub = key.public_key()
    _write_public(pub_path, public_pem(pub))
    return fingerprint(public_der(pub))


def load_hq_public(path: Path) -> HqPublicKey:
    try:
        key = serialization.load_pem_public_key(_read_public(path))
    except ValueError as exc:
        raise KeyFileError(f"{path} is not a PEM public key") from exc
    if isinstance(key, x25519.X25519PublicKey):
        return key
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise KeyFileError(f"{path} is not a headquarters key (X25519 or P-256)")


def load_hq_private(path: Path) -> HqPrivateKey:
    try:
        key = serialization.load_pem_private_key(_read_private(path), password=None)
    except ValueError as exc:
        raise KeyFileError(f"{path} is not a PEM private key") from exc
    if isinstance(key, x25519.X25519PrivateKey):
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise KeyFileError(f"{path} is not a headquarters key (X25519 or P-256)")


# -- headquarters' receipt key and the two-key hq.pub ------------------------------------------


def write_private_pem(path: Path, pem: bytes, overwrite: bool = False) -> None:
    """Write a PEM private key (or any secret) 0600 through a descriptor opened with that mode."""
    _write_private(path, pem, overwrite)


def write_public_pem(path: Path, pem: bytes) -> None:
    """Write a public PEM file 0644, atomically."""
    _write_public(path, pem)


def generate_receipt_key(key_path: Path, overwrite: bool = False) -> ed25519.Ed25519PublicKey:
    """Create headquarters' Ed25519 receipt-signing key (0600); return its public key."""
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_private(key_path, pem, overwrite)
    return key.public_key()


def load_receipt_private(path: Path) -> ed25519.Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(_read_private(path), password=None)
    except ValueError as exc:
        raise KeyFileError(f"{path} is not a PEM private key") from exc
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise KeyFileError(f"{path} is not an Ed25519 receipt key")
    return key


def write_hq_pub(path: Path, hq_public: HqPublicKey, receipt_public: ed25519.Ed25519PublicKey) -> None:
    """hq.pub: the HPKE public key, then the receipt public key, both PEM."""
    _write_public(path, public_pem(hq_public) + public_pem(receipt_public))


def _pem_blocks(data: bytes) -> list[bytes]:
    blocks: list[bytes] = []
    end_marker = b"-----END "
    rest = data
    while (start := rest.find(b"-----BEGIN ")) >= 0:
        end = rest.find(end_marker, start)
        if end < 0:
            break
        stop = rest.find(b"-----", end + len(end_marker))
        if stop < 0:
            break
        blocks.append(rest[start : stop + 5] + b"\n")
        rest = rest[stop + 5 :]
    return blocks


def load_receipt_public(path: Path) -> ed25519.Ed25519PublicKey:
    """The receipt public key: the second PEM key of a two-key ``hq.pub``."""
    blocks = _pem_blocks(_read_public(path))
    if len(blocks) < 2:
        raise KeyFileError(f"{path} holds no receipt key (an hq.pub from before receipts? run bodycam-hq keygen)")
    try:
        key = serialization.load_pem_public_key(blocks[1])
    except ValueError as exc:
        raise KeyFileError(f"{path}: the second key is not a PEM public key") from exc
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise KeyFileError(f"{path}: the second key is not an Ed25519 receipt key")
    return key


def load_hq_pub_pair(path: Path) -> tuple[HqPublicKey, ed25519.Ed25519PublicKey]:
    """Both keys of ``hq.pub``: (HPKE key, receipt key)."""
    return load_hq_public(path), load_receipt_public(path)
