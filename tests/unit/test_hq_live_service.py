"""Headquarters' live-view service without HTTP or Janus: who may watch, tokens that end, joins audited."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from agent.sync.client import parse_ice_links
from hq.live.broker import Publication, Subscription
from hq.live.service import LiveError, LivePolicy, LiveService, TurnSettings, turn_credentials
from hq.live.whip import ice_links

S = 1_000_000_000


class Broker:
    """A hand-written media server: counts what the service asks of it."""

    def __init__(self) -> None:
        self.published: list[str] = []
        self.subscribed = 0
        self.unsubscribed = 0
        self.started: list[str] = []
        self.elsewhere: dict[str, Publication] = {}  # streams another node brokered, as the media server shows

    def publish(self, device_id: str, offer_sdp: str, bitrate_bps: int) -> tuple[Publication, str]:
        self.published.append(device_id)
        return Publication(device_id, 1, 7, 9, 1), "v=0 answer"

    def unpublish(self, pub: Publication) -> None:
        self.published.remove(pub.device_id)

    def subscribe(self, pub: Publication) -> Subscription:
        self.subscribed += 1
        return Subscription(100 + self.subscribed, "v=0 offer")

    def start(self, sub: Subscription, answer_sdp: str) -> None:
        self.started.append(answer_sdp)

    def unsubscribe(self, sub: Subscription) -> None:
        self.unsubscribed += 1

    def alive(self, pub: Publication) -> bool:
        return True

    def find(self, device_id: str) -> Publication | None:
        return self.elsewhere.get(device_id)


class Audit:
    def __init__(self) -> None:
        self.records: list[tuple[str, str, str, str, dict[str, Any]]] = []

    def record(self, event_type: str, actor: str, target: str, outcome: str, **detail: Any) -> None:
        self.records.append((event_type, actor, target, outcome, detail))


class Channel:
    def __init__(self) -> None:
        self.asked: list[tuple[str, str, dict[str, Any]]] = []

    def ask(self, device_id: str, kind: str, args: dict[str, Any], actor: str) -> None:
        self.asked.append((device_id, kind, args))


class Clock:
    def __init__(self) -> None:
        self.now = 1_000 * S

    def __call__(self) -> int:
        return self.now


def _service(**policy: Any) -> tuple[LiveService, Broker, Audit, Channel, Clock]:
    broker, audit, channel, clock = Broker(), Audit(), Channel(), Clock()
    turn = TurnSettings(("turn:127.0.0.1:3478?transport=udp",), "s3cret", ttl_s=600)
    live = LiveService(broker, audit, channel, lambda user: f"p-{user[::-1]}", LivePolicy(**policy), turn, now_ns=clock)
    return live, broker, audit, channel, clock


def test_two_viewers_share_one_upstream_and_the_last_leaving_tells_the_unit() -> None:
    live, broker, audit, channel, _ = _service()
    live.publish("u1", "v=0 offer")
    a = live.join("alice", ["operator"], "u1", known_unit=True)
    b = live.join("bob", ["supervisor"], "u1", known_unit=True)
    live.answer("alice", a.token, "v=0 a")
    assert broker.published == ["u1"] and broker.subscribed == 2  # one stream in, two out
    assert a.ice_servers and a.ice_servers[0]["username"].endswith(":alice")
    live.leave("alice", a.token)
    live.leave("bob", b.token)
    joins = [r for r in audit.records if r[0] == "live-join"]
    leaves = [r for r in audit.records if r[0] == "live-leave"]
    assert [(r[1], r[3], r[4]["viewers"]) for r in joins] == [("alice", "ok", 1), ("bob", "ok", 2)]
    assert [(r[1], r[4]["viewers"]) for r in leaves] == [("alice", 1), ("bob", 0)]
    kinds = [(k, args["viewers"]) for _, k, args in channel.asked]
    assert kinds[-1] == ("live.stop", 0) and channel.asked[-1][2]["reason"] == "no-viewers"
    assert all("operator" not in args for _, _, args in channel.asked)  # the channel names who asked
    assert joins[0][4]["pseudonym"] == "p-ecila"  # the channel's pseudonym, the one the unit records


def test_roles_without_live_view_are_refused_and_audited() -> None:
    live, broker, audit, _, _ = _service()
    live.publish("u1", "v=0 offer")
    with pytest.raises(LiveError) as err:
        live.join("audrey", ["auditor"], "u1", known_unit=True)
    assert err.value.status == 403 and broker.subscribed == 0
    assert audit.records[-1][:4] == ("live-join", "audrey", "u1", "refused")
    sup, *_ = _service(supervisors_only=True)
    sup.publish("u1", "v=0 offer")
    with pytest.raises(LiveError):
        sup.join("olga", ["operator"], "u1", known_unit=True)
    assert sup.join("sam", ["supervisor"], "u1", known_unit=True).token


def test_a_token_not_renewed_expires_and_is_someone_elses_to_nobody() -> None:
    live, broker, audit, _, clock = _service(token_ttl_s=30)
    live.publish("u1", "v=0 offer")
    grant = live.join("alice", ["operator"], "u1", known_unit=True)
    with pytest.raises(LiveError):
        live.keepalive("mallory", grant.token)
    clock.now += 20 * S
    assert live.keepalive("alice", grant.token)["viewers"] == 1
    clock.now += 29 * S
    assert live.sweep() == 0
    clock.now += 2 * S
    assert live.sweep() == 1 and broker.unsubscribed == 1
    assert audit.records[-1][0] == "live-leave" and audit.records[-1][4]["reason"] == "expired"
    with pytest.raises(LiveError):
        live.answer("alice", grant.token, "v=0 late")


def test_a_viewer_of_a_silent_unit_is_told_after_the_wait() -> None:
    live, _, audit, channel, _ = _service(start_wait_s=0.2)
    with pytest.raises(LiveError) as err:
        live.join("alice", ["operator"], "u9", known_unit=True)
    assert err.value.status == 504 and channel.asked[0][1] == "live.start"
    assert channel.asked[0][2]["ice_servers"][0]["urls"] == ["turn:127.0.0.1:3478?transport=udp"]
    assert audit.records[-1][3] == "failed"


def test_turn_credentials_round_trip_through_the_whip_link_header() -> None:
    creds = turn_credentials(TurnSettings(("turn:h:3478",), "secret", 60), "unit-1", 1_000)
    assert creds["username"] == "1060:unit-1"
    assert parse_ice_links(ice_links([creds])) == [
        {"url": "turn:h:3478", "username": "1060:unit-1", "credential": creds["credential"]}]


class SlowBroker(Broker):
    """A stream whose media connection comes up on the ``ready_after``-th look (or never)."""

    def __init__(self, ready_after: int | None) -> None:
        super().__init__()
        self.looks = 0
        self.ready_after = ready_after

    def alive(self, pub: Publication) -> bool:
        self.looks += 1
        return self.ready_after is not None and self.looks >= self.ready_after


def test_a_viewer_joins_a_new_stream_once_its_media_flows_and_is_refused_if_it_never_does() -> None:
    for ready_after, joined in ((3, True), (None, False)):
        broker, audit = SlowBroker(ready_after), Audit()
        live = LiveService(broker, audit, Channel(), lambda user: "p-1", LivePolicy(start_wait_s=0.5))
        live.publish("u1", "v=0 offer")
        if joined:
            assert live.join("alice", ["operator"], "u1", known_unit=True).offer_sdp == "v=0 offer"
            assert broker.looks == 3 and broker.subscribed == 1
        else:
            with pytest.raises(LiveError) as err:
                live.join("alice", ["operator"], "u1", known_unit=True)
            assert err.value.status == 504 and broker.subscribed == 0
            assert [(r[3], r[4]["reason"]) for r in audit.records if r[0] == "live-join"] == [("failed", "no-media")]


class RefusingUnit(Channel):
    """A unit whose live view is off: its refusal of live.start comes back a little later, from
    another thread, as the request channel's result does."""

    def __init__(self) -> None:
        super().__init__()
        self.live: LiveService | None = None

    def ask(self, device_id: str, kind: str, args: dict[str, Any], actor: str) -> None:
        super().ask(device_id, kind, args, actor)
        live = self.live
        assert live is not None
        result = {"kind": kind, "outcome": "refused", "detail": {"reason": "this unit has no handler for live.start"}}
        threading.Timer(0.2, live.unit_answered, (device_id, result)).start()


def test_a_unit_that_refuses_to_stream_is_not_waited_for() -> None:
    audit, unit = Audit(), RefusingUnit()
    live = LiveService(Broker(), audit, unit, lambda user: "p-1", LivePolicy(start_wait_s=60))
    unit.live = live
    with pytest.raises(LiveError) as err:
        live.join("alice", ["operator"], "u1", known_unit=True)  # would wait 60 s without the refusal
    assert (err.value.status, err.value.code) == (409, "unit-refused")
    assert "live view is off on this unit" in err.value.message
    assert [(r[3], r[4]["reason"]) for r in audit.records if r[0] == "live-join"] == [("failed", "unit-refused")]


def test_a_stream_another_node_brokers_is_watched_and_counts_are_tagged_with_this_node() -> None:
    live, broker, audit, channel, _ = _service()
    broker.elsewhere = {"u1": Publication("u1", 0, 7, 9, 1)}  # the unit published through node 1
    grant = live.join("alice", ["operator"], "u1", known_unit=True)
    assert grant.offer_sdp == "v=0 offer" and broker.published == []
    assert live.status("u1") == {"streaming": True, "viewers": 1}
    assert [(k, a["viewers"], a["node"]) for _, k, a in channel.asked] == [("live.start", 1, live.node)]
    live.leave("alice", grant.token)
    assert channel.asked[-1][1:] == ("live.stop", {"viewers": 0, "node": live.node, "reason": "no-viewers"})
    other, *_ = _service()
    assert other.node != live.node  # each process its own tag


def test_a_join_waiting_for_the_unit_finds_its_stream_published_through_another_node() -> None:
    broker, audit = Broker(), Audit()

    class PublishesElsewhere(Channel):
        def ask(self, device_id: str, kind: str, args: dict[str, Any], actor: str) -> None:
            super().ask(device_id, kind, args, actor)
            threading.Timer(0.3, broker.elsewhere.__setitem__, (device_id, Publication(device_id, 0, 7, 9, 1))).start()

    live = LiveService(broker, audit, PublishesElsewhere(), lambda user: "p-1", LivePolicy(start_wait_s=60))
    assert live.join("alice", ["operator"], "u1", known_unit=True).offer_sdp == "v=0 offer"
