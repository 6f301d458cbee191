"""STREAM, HPKE sealing, canonical JSON and key files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, x25519

from agent.evidence import canonical
from agent.evidence.keys import (
    FileKeyStore,
    KeyFileError,
    generate_device_key,
    generate_hq_key,
    load_hq_private,
    load_hq_public,
)
from agent.evidence.sealing import SUITE_P256, SUITE_X25519, SealError, open_sealed, seal, suite_name
from agent.evidence.stream import StreamDecryptor, StreamEncryptor, StreamError

KEY = bytes(range(32))
PREFIX = b"\x01" * 7
AAD = b"header-hash"


def encrypt_all(chunks: list[bytes]) -> list[bytes]:
    enc = StreamEncryptor(KEY, PREFIX, AAD)
    return [enc.encrypt(c, last=(i == len(chunks) - 1)) for i, c in enumerate(chunks)]


def decrypt_all(cts: list[bytes], key: bytes = KEY, aad: bytes = AAD) -> list[bytes]:
    dec = StreamDecryptor(key, PREFIX, aad)
    out = [dec.decrypt(c, last=(i == len(cts) - 1)) for i, c in enumerate(cts)]
    if not dec.finished:
        raise StreamError("not finished")
    return out


def test_stream_round_trip_with_empty_final_chunk() -> None:
    chunks = [os.urandom(65536), os.urandom(1000), b""]
    assert decrypt_all(encrypt_all(chunks)) == chunks


def test_stream_detects_bit_flip() -> None:
    cts = encrypt_all([b"a" * 100, b"b" * 100])
    cts[0] = bytes([cts[0][0] ^ 1]) + cts[0][1:]
    with pytest.raises(StreamError, match="chunk 0"):
        decrypt_all(cts)


def test_stream_detects_reordering() -> None:
    cts = encrypt_all([b"a" * 100, b"b" * 100, b"c"])
    with pytest.raises(StreamError):
        decrypt_all([cts[1], cts[0], cts[2]])


def test_stream_detects_truncation_before_final_chunk() -> None:
    cts = encrypt_all([b"a" * 100, b"b" * 100, b"c"])
    with pytest.raises(StreamError):
        decrypt_all(cts[:2])  # the second chunk is then treated as last, but it was not flagged last


def test_stream_rejects_chunk_after_final() -> None:
    enc = StreamEncryptor(KEY, PREFIX, AAD)
    last = enc.encrypt(b"x", last=True)
    dec = StreamDecryptor(KEY, PREFIX, AAD)
    dec.decrypt(last, last=True)
    with pytest.raises(StreamError, match="follows the final"):
        dec.decrypt(last, last=False)
    with pytest.raises(StreamError):
        enc.encrypt(b"more")


def test_stream_detects_chunk_from_other_segment() -> None:
    mine = encrypt_all([b"a" * 100, b"end"])
    other = StreamEncryptor(os.urandom(32), PREFIX, AAD).encrypt(b"a" * 100)
    with pytest.raises(StreamError):
        decrypt_all([other, mine[1]])


def test_stream_binds_header() -> None:
    cts = encrypt_all([b"a" * 10])
    with pytest.raises(StreamError):
        decrypt_all(cts, aad=b"another header")


@pytest.mark.parametrize("curve", ["x25519", "p256"])
def test_hpke_seal_and_open(curve: str) -> None:
    key = x25519.X25519PrivateKey.generate() if curve == "x25519" else ec.generate_private_key(ec.SECP256R1())
    sealed = seal(b"k" * 32, key.public_key(), b"info")
    assert open_sealed(sealed, key, b"info") == b"k" * 32
    assert suite_name(key) == (SUITE_X25519 if curve == "x25519" else SUITE_P256)
    with pytest.raises(SealError):
        open_sealed(sealed, key, b"other info")
    with pytest.raises(SealError):
        open_sealed(sealed[:-1] + bytes([sealed[-1] ^ 1]), key, b"info")


def test_hpke_wrong_key_fails() -> None:
    sealed = seal(b"k" * 32, x25519.X25519PrivateKey.generate().public_key(), b"i")
    with pytest.raises(SealError):
        open_sealed(sealed, x25519.X25519PrivateKey.generate(), b"i")


def test_canonical_is_sorted_compact_and_strict() -> None:
    assert canonical.dumps({"b": 1, "a": [True, None, "é"]}) == '{"a":[true,null,"é"],"b":1}'.encode()
    with pytest.raises(canonical.CanonicalError, match="floating"):
        canonical.dumps({"x": 1.5})
    with pytest.raises(canonical.CanonicalError, match="canonical"):
        canonical.loads(b'{"b":1, "a":2}')
    with pytest.raises(canonical.CanonicalError):
        canonical.loads(b'{"a":1,"a":2}')
    with pytest.raises(canonical.CanonicalError):
        canonical.loads(b'{"a":1.0}')
    assert canonical.loads(b'{"a":1,"b":"x"}') == {"a": 1, "b": "x"}


def test_private_keys_are_0600_and_never_overwritten(tmp_path: Path) -> None:
    generate_device_key(tmp_path / "device.key", tmp_path / "device.pub")
    generate_hq_key(tmp_path / "hq.key", tmp_path / "hq.pub")
    for name in ("device.key", "hq.key"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        generate_device_key(tmp_path / "device.key", tmp_path / "device.pub")


def test_loading_a_readable_private_key_is_refused(tmp_path: Path) -> None:
    generate_device_key(tmp_path / "device.key", tmp_path / "device.pub")
    os.chmod(tmp_path / "device.key", 0o644)
    with pytest.raises(KeyFileError, match="readable by others"):
        FileKeyStore(tmp_path / "device.key")


def test_keystore_signs_and_hides_its_key(tmp_path: Path) -> None:
    generate_device_key(tmp_path / "device.key", tmp_path / "device.pub")
    store = FileKeyStore(tmp_path / "device.key")
    sig = store.sign(b"msg")
    store.public_key().verify(sig, b"msg")
    assert "PRIVATE" not in repr(store) and len(store.public_key_raw()) == 32


def test_fips_profile_uses_p256(tmp_path: Path) -> None:
    generate_hq_key(tmp_path / "hq.key", tmp_path / "hq.pub", profile="fips")
    assert isinstance(load_hq_public(tmp_path / "hq.pub"), ec.EllipticCurvePublicKey)
    assert isinstance(load_hq_private(tmp_path / "hq.key"), ec.EllipticCurvePrivateKey)


def test_wrong_key_kind_is_refused(tmp_path: Path) -> None:
    generate_device_key(tmp_path / "device.key", tmp_path / "device.pub")
    with pytest.raises(KeyFileError, match="not a headquarters key"):
        load_hq_public(tmp_path / "device.pub")
