"""Requests from headquarters, the pure parts: the signed documents, the unit's verdict, the
parameter checks of each kind and a poll's query."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.evidence.hqrequest import RequestDocError, make_request, make_result, open_request, open_result
from agent.evidence.receipt import ReceiptError, verify_receipt
from agent.sync.requests import RequestHandlers, judge
from hq.longpoll import MAX_WAIT_S, PollError, parse_wait
from hq.requests import RequestError, check_background_upload, pseudonym
from tests.evidence_util import MemorySigner

NS = 1_000_000_000
NOW = 1_790_000_000 * NS
HQ = ed25519.Ed25519PrivateKey.generate()


def fields(**over: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "request_id": "0123456789abcdef" * 2, "device_id": "unit-1", "kind": "background.upload",
        "params": {"from_utc_ns": NOW - 600 * NS, "to_utc_ns": NOW}, "issued_utc_ns": NOW,
        "expires_utc_ns": NOW + 3600 * NS, "requested_by": "p-1234",
    }
    doc.update(over)
    return doc


def test_a_request_opens_only_with_headquarters_key_and_is_no_receipt() -> None:
    signed = make_request(fields(), HQ)
    assert open_request(signed, HQ.public_key())["params"]["to_utc_ns"] == NOW
    with pytest.raises(RequestDocError, match="does not verify"):
        open_request(signed, ed25519.Ed25519PrivateKey.generate().public_key())
    altered = signed.replace(b"unit-1", b"unit-2")
    with pytest.raises(RequestDocError):
        open_request(altered, HQ.public_key())
    with pytest.raises(ReceiptError):  # another context: a request never passes for a receipt
        verify_receipt(signed, HQ.public_key())


@pytest.mark.parametrize("bad", [{"request_id": "xyz"}, {"kind": "Background"}, {"expires_utc_ns": NOW},
                                 {"params": []}, {"requested_by": ""}])
def test_malformed_requests_are_not_signed(bad: dict[str, object]) -> None:
    with pytest.raises(RequestDocError):
        make_request(fields(**bad), HQ)


def test_a_result_is_signed_by_the_device_and_checked_with_its_key() -> None:
    unit = MemorySigner()
    result = {"request_id": "ab" * 16, "device_id": "unit-1", "kind": "background.upload",
              "request_sha256": "cd" * 32, "outcome": "partial", "detail": {"left": 3}, "finished_utc_ns": NOW}
    body = make_result(result, unit)
    assert open_result(body, unit.public_key()) == result
    with pytest.raises(RequestDocError, match="does not verify"):
        open_result(body, MemorySigner().public_key())
    with pytest.raises(RequestDocError, match="outcome"):
        make_result({**result, "outcome": "maybe"}, unit)


def verdict(signed: bytes, now: int = NOW, device: str = "unit-1", kinds: tuple[str, ...] = ("background.upload",)):  # type: ignore[no-untyped-def]
    return judge(signed, HQ.public_key(), device, now, list(kinds))


def test_the_unit_acts_only_on_a_signed_fresh_request_for_itself_of_a_kind_it_has() -> None:
    good = make_request(fields(), HQ)
    assert verdict(good).request is not None and verdict(good).refusal is None
    assert "another unit" in str(verdict(good, device="unit-2").refusal)
    assert "expired" in str(verdict(good, now=NOW + 3600 * NS).refusal)
    assert "no handler" in str(verdict(good, kinds=("live.start",)).refusal)
    forged = make_request(fields(), ed25519.Ed25519PrivateKey.generate())
    refused = verdict(forged)
    assert refused.request is None and not refused.signed and "not signed by headquarters" in str(refused.refusal)
    assert refused.request_id == "0123456789abcdef" * 2  # what it claims, to answer it
    assert verdict(b"garbage" * 20).request_id is None


def test_a_kind_has_one_handler() -> None:
    handlers = RequestHandlers()
    handlers.register("live.start", lambda r: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(ValueError, match="already"):
        handlers.register("live.start", lambda r: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(ValueError):
        handlers.register("Live Start", lambda r: None)  # type: ignore[arg-type,return-value]
    assert handlers.kinds == ["live.start"]


def test_background_upload_parameters() -> None:
    assert check_background_upload({"from_utc_ns": 1, "to_utc_ns": 2}) == {"from_utc_ns": 1, "to_utc_ns": 2}
    for bad in ({"from_utc_ns": 2, "to_utc_ns": 1}, {"from_utc_ns": 1}, {"from_utc_ns": True, "to_utc_ns": 2},
                {"from_utc_ns": 1, "to_utc_ns": 2, "x": 0}):
        with pytest.raises(RequestError):
            check_background_upload(bad)


def test_pseudonyms_are_stable_per_person_and_reveal_no_name() -> None:
    assert pseudonym(HQ, "alice") == pseudonym(HQ, "alice") != pseudonym(HQ, "bob")
    assert "alice" not in pseudonym(HQ, "alice")
    assert pseudonym(ed25519.Ed25519PrivateKey.generate(), "alice") != pseudonym(HQ, "alice")


def test_a_poll_query_is_only_wait_s() -> None:
    assert parse_wait("") == 0.0
    assert parse_wait("wait_s=25") == MAX_WAIT_S
    for bad in ("wait_s=26", "wait_s=-1", "wait_s=1.5", "x=1", "wait_s=1&wait_s=2"):
        with pytest.raises(PollError):
            parse_wait(bad)
