"""Live view over the request channel, both ends without a network: headquarters' kinds and their
parameter checks, the adapter that queues signed requests (a real SQLite index), and the unit's handlers
in front of its live controller."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.config.model import LiveConfig
from agent.evidence.hqrequest import open_request
from agent.live.channel import live_handlers
from agent.live.controller import LiveController
from agent.live.feed import LiveFeed
from agent.sync.requests import HqRequest, RequestHandlers, judge
from hq.audit import Auditor
from hq.index import SqlIndex
from hq.live.channel import REQUEST_TTL_S, ChannelRequests
from hq.requests import KINDS, RequestError, UnitRequests, check_live_start, check_live_stop, pseudonym
from tests.fakes import FakeClock

S = 1_000_000_000
T0 = 1_790_000_000 * S
HQ = ed25519.Ed25519PrivateKey.generate()
TURN = {"urls": ["turn:127.0.0.1:3478?transport=udp"], "username": "1790000600:unit-1", "credential": "c2VjcmV0"}


def test_live_start_and_stop_are_kinds_with_checked_parameters() -> None:
    assert KINDS["live.start"] is check_live_start and KINDS["live.stop"] is check_live_stop
    assert check_live_start({"viewers": 1}) == {"viewers": 1, "ice_servers": []}
    assert check_live_start({"viewers": 2, "ice_servers": [TURN]}) == {"viewers": 2, "ice_servers": [TURN]}
    assert check_live_start({"viewers": 0, "ice_servers": [{"urls": "stun:h:3478"}]})["ice_servers"] == [
        {"urls": ["stun:h:3478"], "username": "", "credential": ""}]
    assert check_live_stop({"viewers": 0, "reason": "no-viewers"}) == {"viewers": 0, "reason": "no-viewers"}
    assert check_live_start({"viewers": 1, "node": "a1b2"})["node"] == "a1b2"  # which node counts them
    assert check_live_stop({"viewers": 0, "reason": "requested", "node": "a1b2"})["node"] == "a1b2"
    bad_starts: list[dict[str, Any]] = [
        {}, {"viewers": -1}, {"viewers": True}, {"viewers": 1, "operator": "olivia"},
        {"viewers": 1, "ice_servers": [TURN] * 5}, {"viewers": 1, "ice_servers": [{"urls": ["http://x"]}]},
        {"viewers": 1, "ice_servers": [{**TURN, "username": 7}]}, {"viewers": 1, "ice_servers": "turn:x"},
        {"viewers": 1, "node": ""}, {"viewers": 1, "node": "a b"}, {"viewers": 1, "node": 7},
    ]
    for bad in bad_starts:
        with pytest.raises(RequestError, match="live.start"):
            check_live_start(bad)
    for bad in ({"viewers": 0}, {"viewers": 0, "reason": "bored"}, {"viewers": "0", "reason": "requested"}):
        with pytest.raises(RequestError, match="live.stop"):
            check_live_stop(bad)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def index(tmp_path: Path) -> Iterator[SqlIndex]:
    with SqlIndex.open(f"sqlite:///{tmp_path / 'index.sqlite'}", auto_migrate=True) as opened:
        opened.enroll("unit-1", "pem", "ab" * 32, T0)
        yield opened


def test_the_adapter_queues_short_lived_signed_requests_named_by_the_channels_pseudonym(index: SqlIndex) -> None:
    clock = Clock()
    requests = UnitRequests(index, HQ, Auditor(index, "test", clock), clock)
    channel = ChannelRequests(requests)
    channel.ask("unit-1", "live.start", {"viewers": 1, "ice_servers": [TURN]}, "olivia")
    clock.now += 1_000_000  # the unit takes them in the order they were issued
    channel.ask("unit-1", "live.stop", {"viewers": 0, "reason": "no-viewers"}, "olivia")
    taken = requests.take("unit-1")
    docs = [open_request(signed, HQ.public_key()) for signed in taken]
    assert [d["kind"] for d in docs] == ["live.start", "live.stop"]
    assert all(d["requested_by"] == requests.pseudonym("olivia") == pseudonym(HQ, "olivia") for d in docs)
    assert all(d["expires_utc_ns"] - d["issued_utc_ns"] == REQUEST_TTL_S * S for d in docs)
    assert "olivia" not in repr(docs)  # the unit never learns the name
    audited = [r for r in index.audit_log("unit-request") if r.outcome == "ok"]
    assert [(r.actor, r.detail["kind"], r.detail["requested_by"]) for r in audited] == [
        ("olivia", "live.start", pseudonym(HQ, "olivia")), ("olivia", "live.stop", pseudonym(HQ, "olivia"))]
    # a live request the unit did not fetch within its lifetime is void
    channel.ask("unit-1", "live.start", {"viewers": 1}, "olivia")
    clock.now += int(REQUEST_TTL_S * S) + 1
    assert requests.take("unit-1") == []
    with pytest.raises(RequestError, match="viewers"):
        channel.ask("unit-1", "live.start", {"viewers": -3}, "olivia")


class Publisher:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.started = False

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        pass

    def status(self) -> dict[str, object]:
        return {}


def _request(kind: str, params: dict[str, Any], by: str = "p-0123") -> HqRequest:
    return HqRequest("ab" * 16, kind, params, T0, T0 + 30 * S, by, "cd" * 32)


def test_the_units_handlers_start_and_stop_the_stream_for_the_requests_pseudonym() -> None:
    posted: list[dict[str, Any]] = []
    controller = LiveController(dataclasses.replace(LiveConfig(), enabled=True), LiveFeed(15, 2), None,  # type: ignore[arg-type]
                                FakeClock(), lambda name, actor, **args: posted.append(args), lambda: True,
                                publisher_factory=Publisher)
    handlers = RequestHandlers()
    for kind, handler in live_handlers(controller).items():
        handlers.register(kind, handler)
    assert handlers.kinds == ["live.start", "live.stop"]
    start = handlers.get("live.start")
    stop = handlers.get("live.stop")
    assert start is not None and stop is not None
    outcome = start(_request("live.start", {"viewers": 1, "ice_servers": [TURN]}))
    assert (outcome.outcome, outcome.detail) == ("done", {"streaming": True, "viewers": 1})
    assert posted[-1]["on"] and posted[-1]["detail"]["by"] == "p-0123" and posted[-1]["detail"]["viewers"] == 1
    outcome = stop(_request("live.stop", {"viewers": 0, "reason": "requested"}, by="p-4567"))
    assert (outcome.outcome, outcome.detail) == ("done", {"streaming": False, "viewers": 0})
    assert not posted[-1]["on"] and posted[-1]["detail"]["by"] == "p-4567"
    assert posted[-1]["detail"]["reason"] == "requested"
    refused = start(_request("live.start", {"viewers": 1, "ice_servers": [{"urls": ["http://x"]}]}))
    assert refused.outcome == "refused" and "ice_servers" in refused.detail["reason"]


def test_a_unit_with_live_view_off_refuses_live_requests_for_want_of_a_handler() -> None:
    from agent.evidence.hqrequest import make_request

    signed = make_request({"request_id": "ab" * 16, "device_id": "unit-1", "kind": "live.start",
                           "params": {"viewers": 1, "ice_servers": []}, "issued_utc_ns": T0,
                           "expires_utc_ns": T0 + 30 * S, "requested_by": "p-1"}, HQ)
    verdict = judge(signed, HQ.public_key(), "unit-1", T0, ["background.upload"])
    assert verdict.request is None and "no handler for live.start" in str(verdict.refusal)
