"""RFC 9421 request signatures: round trip, tampering, wrong key, replay, clock window, coverage."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.evidence.httpsig import (
    CREATED_WINDOW_S,
    NONCE_TTL_S,
    NonceCache,
    SignatureError,
    content_digest,
    new_nonce,
    normalize_target_uri,
    sign_request,
    verify_request,
)
from tests.evidence_util import MemorySigner

URI = "https://127.0.0.1:8443/v1/uploads/abc"
NOW = 1_790_000_000


def lookup_for(signer: MemorySigner, device: str = "unit-1") -> Callable[[str], ed25519.Ed25519PublicKey | None]:
    return lambda key_id: signer.public_key() if key_id == device else None


def signed(
    signer: MemorySigner,
    body: bytes = b"chunk",
    headers: dict[str, str] | None = None,
    now_s: int = NOW,
    method: str = "PATCH",
    device: str = "unit-1",
) -> dict[str, str]:
    h = dict(headers if headers is not None else {"Upload-Offset": "0", "Tus-Resumable": "1.0.0"})
    h.update(sign_request(method, URI, h, body, device, signer, now_s))
    return h


def reason(call: Callable[[], object]) -> str:
    with pytest.raises(SignatureError) as info:
        call()
    return info.value.reason


def test_round_trip_returns_the_key_id() -> None:
    s = MemorySigner()
    h = signed(s)
    assert verify_request("PATCH", URI, h, b"chunk", lookup_for(s), NOW, NonceCache().seen) == "unit-1"
    assert h["Content-Digest"] == content_digest(b"chunk")
    assert '("@method" "@target-uri" "content-digest" "upload-offset")' in h["Signature-Input"]


def test_header_names_are_case_insensitive_and_default_port_is_normalised() -> None:
    s = MemorySigner()
    h = {k.lower(): v for k, v in signed(s).items()}
    assert verify_request("patch", URI, h, b"chunk", lookup_for(s), NOW, NonceCache().seen) == "unit-1"
    assert normalize_target_uri("HTTPS://LocalHost:443/v1/x") == "https://localhost/v1/x"
    assert normalize_target_uri("https://[::1]:8443") == "https://[::1]:8443/"


def test_every_tus_header_present_is_covered() -> None:
    s = MemorySigner()
    h = signed(s, body=b"", headers={"Upload-Length": "10", "Upload-Metadata": "seq MQ=="}, method="POST")
    assert '"upload-length" "upload-metadata"' in h["Signature-Input"]


def _flip_char(value: str, i: int) -> str:
    """Change one base64 character well inside the value: a different signature byte, deterministically."""
    start = value.index(":") + 1 + i
    return value[:start] + ("B" if value[start] != "B" else "C") + value[start + 1:]


def _padding_bits_set(value: str) -> str:
    """The same signature bytes spelled with non-zero padding bits (Python's decoder alone accepts it)."""
    body = value[value.index(":") + 1:-1]
    last = body.rstrip("=")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    bumped = last[:-1] + alphabet[alphabet.index(last[-1]) | 1]
    return value[: value.index(":") + 1] + bumped + body[len(last):] + ":"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda h: h.update({"Upload-Offset": "5"}), "bad-signature"),
        (lambda h: h.update({"Signature": _flip_char(h["Signature"], 12)}), "bad-signature"),
        (lambda h: h.update({"Signature": _padding_bits_set(h["Signature"])}), "malformed"),
        (
            lambda h: h.update({"Signature-Input": h["Signature-Input"].replace("created=", "created=1")}),
            "bad-signature",
        ),
        (lambda h: h.update({"Signature-Input": h["Signature-Input"].replace('"upload-offset"', "")}), "malformed"),
        (lambda h: h.pop("Signature"), "missing"),
        (lambda h: h.update({"Signature-Input": "sig2=()"}), "malformed"),
        (lambda h: h.update({"Content-Digest": content_digest(b"other")}), "digest"),
        (lambda h: h.update({"Upload-Checksum": "sha256 abc="}), "malformed"),
    ],
)
def test_tampering_is_refused(change: Callable[[dict[str, str]], object], expected: str) -> None:
    s = MemorySigner()
    h = signed(s)
    change(h)
    assert reason(lambda: verify_request("PATCH", URI, h, b"chunk", lookup_for(s), NOW, NonceCache().seen)) == expected


def test_altered_body_method_or_uri_is_refused() -> None:
    s = MemorySigner()
    h = signed(s)
    cache = NonceCache()
    assert reason(lambda: verify_request("PATCH", URI, h, b"chunK", lookup_for(s), NOW, cache.seen)) == "digest"
    assert reason(lambda: verify_request("DELETE", URI, h, b"chunk", lookup_for(s), NOW, cache.seen)) == "bad-signature"
    other = URI.replace("abc", "abd")
    assert (
        reason(lambda: verify_request("PATCH", other, h, b"chunk", lookup_for(s), NOW, cache.seen)) == "bad-signature"
    )


def test_wrong_or_unknown_key_is_refused() -> None:
    s, impostor = MemorySigner(), MemorySigner()
    h = signed(impostor)
    assert reason(lambda: verify_request("PATCH", URI, h, b"chunk", lookup_for(s), NOW, NonceCache().seen)) == (
        "bad-signature"
    )
    h = signed(s, device="unit-2")
    assert reason(lambda: verify_request("PATCH", URI, h, b"chunk", lookup_for(s), NOW, NonceCache().seen)) == (
        "unknown-key"
    )


def test_replay_is_refused_until_the_nonce_expires() -> None:
    s = MemorySigner()
    cache = NonceCache()
    h = signed(s)
    verify_request("PATCH", URI, h, b"chunk", lookup_for(s), NOW, cache.seen)
    assert reason(lambda: verify_request("PATCH", URI, h, b"chunk", lookup_for(s), NOW + 1, cache.seen)) == "replay"
    # A fresh signature with a new nonce passes.
    assert verify_request("PATCH", URI, signed(s), b"chunk", lookup_for(s), NOW, cache.seen) == "unit-1"
    assert not cache.seen("unit-1", "x" * 22, NOW)
    assert cache.seen("unit-1", "x" * 22, NOW + NONCE_TTL_S)
    assert not cache.seen("unit-1", "x" * 22, NOW + 2 * NONCE_TTL_S + 1)


def test_nonce_is_consumed_only_by_a_verified_request() -> None:
    s = MemorySigner()
    cache = NonceCache()
    h = signed(MemorySigner())
    reason(lambda: verify_request("PATCH", URI, h, b"chunk", lookup_for(s), NOW, cache.seen))
    nonce = h["Signature-Input"].split('nonce="')[1].split('"')[0]
    assert not cache.seen("unit-1", nonce, NOW)


@pytest.mark.parametrize("skew", [CREATED_WINDOW_S + 1, -CREATED_WINDOW_S - 1])
def test_created_outside_the_window_is_refused(skew: int) -> None:
    s = MemorySigner()
    h = signed(s, now_s=NOW + skew)
    assert reason(lambda: verify_request("PATCH", URI, h, b"chunk", lookup_for(s), NOW, NonceCache().seen)) == "expired"


@pytest.mark.parametrize("skew", [CREATED_WINDOW_S, -CREATED_WINDOW_S])
def test_created_at_the_window_edge_passes(skew: int) -> None:
    s = MemorySigner()
    h = signed(s, now_s=NOW + skew)
    assert verify_request("PATCH", URI, h, b"chunk", lookup_for(s), NOW, NonceCache().seen) == "unit-1"


def test_nonce_forms() -> None:
    s = MemorySigner()
    assert len(new_nonce()) == 22
    h = sign_request("POST", URI, {}, b"", "unit-1", s, NOW, nonce=b"\x00" * 16)
    assert 'nonce="AAAAAAAAAAAAAAAAAAAAAA"' in h["Signature-Input"]
    with pytest.raises(ValueError):
        sign_request("POST", URI, {}, b"", "unit-1", s, NOW, nonce="short")
    with pytest.raises(ValueError):
        sign_request("POST", URI, {}, b"", 'bad"id', s, NOW)
