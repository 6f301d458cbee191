"""Technician login: the signed message, challenge-response, certificates, trust, lockout."""

from __future__ import annotations

import base64
import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.console.auth import (
    CTX_LOGIN,
    NONCE_TTL_NS,
    Authenticator,
    AuthError,
    Lockout,
    TrustStore,
    issue_certificate,
    key_fingerprint,
    login_message,
    parse_public_pems,
    raw_public,
)

S = 1_000_000_000
UTC = 1_715_680_800 * S
UNIT = "unit-7"


def trust_with(*keys: ed25519.Ed25519PrivateKey, ca: ed25519.Ed25519PrivateKey | None = None) -> TrustStore:
    listed = {key_fingerprint(k.public_key()): (f"tech{i}", k.public_key()) for i, k in enumerate(keys)}
    return TrustStore(UNIT, listed, None if ca is None else ca.public_key())


def answer(auth: Authenticator, key: ed25519.Ed25519PrivateKey, now: int, cert: str | None = None,
           device: str = UNIT, nonce: bytes | None = None) -> object:
    n = auth.challenge(nonce or os.urandom(32), now)
    sig = key.sign(login_message(device, n))
    return auth.respond(raw_public(key.public_key()).hex(), sig.hex(), cert, now + S, UTC)


def lockout(after: int = 3) -> Lockout:
    return Lockout(after=after, base_ns=30 * S, max_ns=120 * S)


def test_the_signed_message_is_context_device_and_nonce() -> None:
    assert login_message("unit-7", b"\x01\x02") == b"bodycam/v1/console-login\x00unit-7\x00\x01\x02"
    assert CTX_LOGIN == b"bodycam/v1/console-login\x00"


def test_a_listed_key_logs_in() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    auth = Authenticator(trust_with(key), lockout())
    tech = answer(auth, key, 0)
    assert tech.name == "tech0" and tech.via == "config"  # type: ignore[attr-defined]
    assert tech.actor.startswith("console:tech0:")  # type: ignore[attr-defined]


@pytest.mark.parametrize("case", ["unknown key", "other unit", "wrong nonce"])
def test_wrong_answers_are_refused(case: str) -> None:
    key, stranger = ed25519.Ed25519PrivateKey.generate(), ed25519.Ed25519PrivateKey.generate()
    auth = Authenticator(trust_with(key), lockout())
    nonce = auth.challenge(os.urandom(32), 0)
    signer, device, signed_nonce = key, UNIT, nonce
    if case == "unknown key":
        signer = stranger
    elif case == "other unit":
        device = "unit-8"
    else:
        signed_nonce = os.urandom(32)
    sig = signer.sign(login_message(device, signed_nonce))
    with pytest.raises(AuthError) as info:
        auth.respond(raw_public(signer.public_key()).hex(), sig.hex(), None, S, UTC)
    assert info.value.code == ("unknown-key" if case == "unknown key" else "bad-signature")


def test_a_challenge_is_answered_once_and_expires() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    auth = Authenticator(trust_with(key), lockout(after=10))
    nonce = auth.challenge(os.urandom(32), 0)
    sig = key.sign(login_message(UNIT, nonce)).hex()
    pub = raw_public(key.public_key()).hex()
    auth.respond(pub, sig, None, S, UTC)
    with pytest.raises(AuthError, match="no pending challenge"):
        auth.respond(pub, sig, None, 2 * S, UTC)  # replayed
    nonce = auth.challenge(os.urandom(32), 0)
    with pytest.raises(AuthError) as info:
        auth.respond(pub, key.sign(login_message(UNIT, nonce)).hex(), None, NONCE_TTL_NS + 1, UTC)
    assert info.value.code == "no-challenge"


def test_malformed_answers_are_refused_without_parsing_crashes() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    auth = Authenticator(trust_with(key), lockout(after=100))
    for pub, sig in [("zz", "00"), ("00" * 32, "11" * 10), ("g" * 64, "0" * 128), ("", "")]:
        auth.challenge(os.urandom(32), 0)
        with pytest.raises(AuthError) as info:
            auth.respond(pub, sig, None, S, UTC)
        assert info.value.code in ("bad-request", "unknown-key", "bad-signature")


def test_lockout_backs_off_exponentially_and_a_success_clears_it() -> None:
    lk = lockout(after=3)
    assert [lk.failed(0), lk.failed(0)] == [0, 0]
    assert lk.failed(0) == 30 * S and lk.remaining_ns(10 * S) == 20 * S
    assert lk.failed(30 * S) == 60 * S
    assert lk.failed(90 * S) == 120 * S
    assert lk.failed(210 * S) == 120 * S  # capped
    assert lk.remaining_ns(330 * S) == 0
    lk.succeeded()
    assert lk.failures == 0 and lk.remaining_ns(330 * S) == 0


def test_a_locked_line_refuses_even_the_right_key_until_the_lock_ends() -> None:
    key, stranger = ed25519.Ed25519PrivateKey.generate(), ed25519.Ed25519PrivateKey.generate()
    auth = Authenticator(trust_with(key), lockout(after=2))
    for _ in range(2):
        with pytest.raises(AuthError):
            answer(auth, stranger, 0)
    with pytest.raises(AuthError) as info:
        auth.challenge(os.urandom(32), 2 * S)
    assert info.value.code == "locked" and "try again in 29 s" in str(info.value)
    answer(auth, key, 31 * S)
    assert auth.lockout.failures == 0


def _ca_setup() -> tuple[ed25519.Ed25519PrivateKey, ed25519.Ed25519PrivateKey, Authenticator]:
    ca, tech = ed25519.Ed25519PrivateKey.generate(), ed25519.Ed25519PrivateKey.generate()
    return ca, tech, Authenticator(trust_with(ca=ca), lockout(after=100))


def _cert(ca: ed25519.Ed25519PrivateKey, tech: ed25519.Ed25519PrivateKey, devices: list[str] | None = None,
          not_before: int = UTC - 3600 * S, not_after: int = UTC + 3600 * S) -> str:
    return issue_certificate(ca, technician="Alice Martin", public_key=tech.public_key(),
                             devices=devices or [UNIT, "unit-9"], not_before_utc_ns=not_before,
                             not_after_utc_ns=not_after).decode()


def test_a_certificate_from_headquarters_admits_its_technician() -> None:
    ca, tech, auth = _ca_setup()
    who = answer(auth, tech, 0, cert=_cert(ca, tech))
    assert who.name == "Alice Martin" and who.via == "certificate"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("case", "code"),
    [("other unit", "bad-certificate"), ("expired", "certificate-expired"), ("not yet", "certificate-expired"),
     ("other ca", "bad-certificate"), ("other key", "bad-certificate"), ("tampered", "bad-certificate"),
     ("garbage", "bad-certificate"), ("none", "unknown-key")],
)
def test_bad_certificates_are_refused(case: str, code: str) -> None:
    ca, tech, auth = _ca_setup()
    cert: str | None = _cert(ca, tech)
    if case == "other unit":
        cert = _cert(ca, tech, devices=["unit-9"])
    elif case == "expired":
        cert = _cert(ca, tech, not_after=UTC - S)
    elif case == "not yet":
        cert = _cert(ca, tech, not_before=UTC + 3600 * S, not_after=UTC + 7200 * S)
    elif case == "other ca":
        cert = _cert(ed25519.Ed25519PrivateKey.generate(), tech)
    elif case == "other key":
        cert = _cert(ca, ed25519.Ed25519PrivateKey.generate())
    elif case == "tampered":
        blob = bytearray(base64.b64decode(cert or ""))
        blob[20] ^= 1
        cert = base64.b64encode(bytes(blob)).decode()
    elif case == "garbage":
        cert = "!!not base64!!"
    else:
        cert = None
    with pytest.raises(AuthError) as info:
        answer(auth, tech, 0, cert=cert)
    assert info.value.code == code


def test_certificates_name_units_one_by_one() -> None:
    ca, tech = ed25519.Ed25519PrivateKey.generate(), ed25519.Ed25519PrivateKey.generate()
    for devices in ([], ["*"], [""], [UNIT, "*"]):
        with pytest.raises(ValueError):
            issue_certificate(ca, technician="Alice", public_key=tech.public_key(), devices=devices,
                              not_before_utc_ns=0, not_after_utc_ns=UTC)
    with pytest.raises(ValueError):
        issue_certificate(ca, technician="Alice\n", public_key=tech.public_key(), devices=[UNIT],
                          not_before_utc_ns=0, not_after_utc_ns=UTC)


def test_public_pems_are_parsed_and_other_kinds_refused() -> None:
    a, b = ed25519.Ed25519PrivateKey.generate(), ed25519.Ed25519PrivateKey.generate()
    pem = b"".join(k.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo) for k in (a, b))
    assert [raw_public(k) for k in parse_public_pems(b"comment\n" + pem)] == [
        raw_public(a.public_key()), raw_public(b.public_key())]
    with pytest.raises(ValueError):
        parse_public_pems(b"nothing here")
    from cryptography.hazmat.primitives.asymmetric import x25519

    x = x25519.X25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(ValueError, match="Ed25519"):
        parse_public_pems(x)


def test_the_lockout_survives_a_restart_as_a_record() -> None:
    before = lockout(after=2)
    before.failed(10 * S)
    before.failed(11 * S)  # locked for 30 s from 11 s
    record = before.to_record(now_ns=21 * S, utc_ns=UTC)  # 20 s of it left
    after = lockout(after=2)  # the restarted agent: a new monotonic clock
    after.restore(record, now_ns=5 * S, utc_ns=UTC + 4 * S)  # 4 s of downtime
    assert after.failures == 2 and after.remaining_ns(5 * S) == 16 * S
    assert after.failed(30 * S) == 60 * S  # the next failure doubles, as if nothing had restarted


def test_a_clock_set_back_cannot_lengthen_a_restored_lock() -> None:
    before = lockout(after=1)
    before.failed(0)
    after = lockout(after=1)
    after.restore(before.to_record(0, UTC), now_ns=0, utc_ns=UTC - 3600 * S)
    assert after.remaining_ns(0) == 30 * S
    later = lockout(after=1)
    later.restore(before.to_record(0, UTC), now_ns=0, utc_ns=UTC + 3600 * S)
    assert later.remaining_ns(0) == 0 and later.failures == 1


@pytest.mark.parametrize("record", [None, [], {}, {"failures": "3", "locked_until_utc_ns": 0},
                                    {"failures": -1, "locked_until_utc_ns": 0}, {"failures": 1}])
def test_a_malformed_lockout_record_is_refused(record: object) -> None:
    with pytest.raises(ValueError):
        lockout().restore(record, 0, UTC)


def test_every_lockout_change_is_reported_for_saving() -> None:
    key, stranger = ed25519.Ed25519PrivateKey.generate(), ed25519.Ed25519PrivateKey.generate()
    seen: list[int] = []
    auth = Authenticator(trust_with(key), lockout(after=5), lambda lk, now: seen.append(lk.failures))
    with pytest.raises(AuthError):
        answer(auth, stranger, 0)
    answer(auth, key, 10 * S)
    answer(auth, key, 20 * S)  # nothing to clear: nothing to save
    assert seen == [1, 0]
