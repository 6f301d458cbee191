"""The console's log ring: bounded, one line per record, and nothing secret-looking gets out."""

from __future__ import annotations

import logging

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.console.logring import LogRing, redact


def test_pem_blocks_whole_or_cut_off_are_redacted() -> None:
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    out = redact(f"loaded {pem} ok")
    assert "PRIVATE KEY" not in out and "[redacted PEM]" in out and out.endswith(" ok")
    assert redact("oops -----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2Vw") == "oops [redacted PEM]"


def test_secret_named_values_are_redacted() -> None:
    for text in ["token=abc123", "password: hunter2", "api_key='xyz'", "Authorization: Bearer", "nonce=00ff",
                 'content_key="k"', "signature=deadbeef"]:
        out = redact(f"request {text} done")
        assert "[redacted]" in out and out.endswith(" done"), (text, out)
        assert not any(s in out for s in ("abc123", "hunter2", "xyz", "00ff", "deadbeef"))


def test_long_base64_is_redacted_but_hex_digests_and_fingerprints_stay() -> None:
    blob = "q8R4w+Zt1lQm0pX2YbV9cE7nKs3uHjD5aFgT6oWiLe0="
    assert redact(f"wrapped {blob} done") == "wrapped [redacted] done"
    digest = "ab" * 32
    assert redact(f"chain head {digest}") == f"chain head {digest}"
    assert redact("segment 0000000012.bcs sealed, 4 chunks") == "segment 0000000012.bcs sealed, 4 chunks"


def test_the_ring_keeps_the_last_lines_as_single_redacted_lines() -> None:
    ring = LogRing(capacity=3)
    logger = logging.getLogger("test.console.ring")
    logger.addHandler(ring)
    logger.setLevel(logging.INFO)
    try:
        for i in range(5):
            logger.info("line %d", i)
        logger.warning("multi\nline password=swordfish")
        try:
            raise ValueError("bad thing")
        except ValueError:
            logger.exception("failed")
        logger.debug("not kept: below INFO")
    finally:
        logger.removeHandler(ring)
    tail = ring.tail(10)
    assert len(tail) == 3
    assert tail[0].endswith("test.console.ring: line 4")
    assert "swordfish" not in tail[1] and "\n" not in tail[1] and " W " in tail[1]
    assert tail[2].endswith("failed (ValueError: bad thing)")
    assert ring.tail(1) == tail[-1:] and ring.tail(0) == []


def test_very_long_messages_are_cut_and_stay_cheap() -> None:
    import time

    ring = LogRing()
    ring.emit(logging.LogRecord("x", logging.INFO, __file__, 1, "word " * 1000, None, None))
    assert len(ring.tail(1)[0]) == 300
    t0 = time.monotonic()
    ring.emit(logging.LogRecord("x", logging.INFO, __file__, 1, "ab" * 500_000, None, None))
    ring.emit(logging.LogRecord("x", logging.INFO, __file__, 1, "-----BEGIN PRIVATE KEY-----" + "A" * 10**6, None,
                                None))
    assert time.monotonic() - t0 < 1.0
    assert "AAAA" not in ring.tail(1)[0]
