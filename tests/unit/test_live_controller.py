"""The unit's live controller with a hand-written publisher and a fake clock: what starts, stops, is signed."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from agent.config.model import LiveConfig
from agent.live.controller import LiveController, LiveRequestError
from agent.live.feed import LiveFeed
from tests.fakes import FakeClock

S = 1_000_000_000


class Publisher:
    made: list[Publisher] = []

    def __init__(self, feed: Any, encoder: Any, whip: Any, bounds: Any, ice: Any, relay_only: bool,
                 on_end: Any, audio: Any = None) -> None:
        self.ice, self.on_end, self.started, self.stopped = ice, on_end, False, False
        Publisher.made.append(self)

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True

    def status(self) -> dict[str, object]:
        return {}


class Unit:
    def __init__(self, **live: Any) -> None:
        self.clock = FakeClock()
        self.posted: list[dict[str, Any]] = []
        self.recording = True
        settings = {"enabled": True, "idle_stop_s": 10.0, "max_duration_s": 60.0, **live}
        cfg = dataclasses.replace(LiveConfig(), **settings)
        Publisher.made = []
        self.live = LiveController(cfg, LiveFeed(15, 2), whip=None, clock=self.clock,  # type: ignore[arg-type]
                                   post_command=self.post, recording=lambda: self.recording,
                                   publisher_factory=Publisher)

    def post(self, name: str, actor: str, **args: Any) -> None:
        assert name == "live"
        self.posted.append(args)

    def after(self, seconds: float) -> None:
        self.clock.sleep(seconds)
        self.live.tick()


def test_a_request_starts_one_stream_and_viewers_keep_it_until_the_idle_time_after_the_last() -> None:
    u = Unit()
    u.live.tick()
    u.live.request("live.start", {"operator": "op-1", "viewers": 1,
                                  "ice_servers": [{"urls": ["turn:h:3478"], "username": "u", "credential": "c"}]})
    u.live.request("live.start", {"operator": "op-2", "viewers": 2})
    assert len(Publisher.made) == 1 and Publisher.made[0].started
    assert Publisher.made[0].ice[0].urls == ("turn:h:3478",)
    assert u.posted[0]["on"] and u.posted[0]["detail"]["by"] == "op-1"
    u.after(30)
    assert u.live.get_status()["streaming"]
    u.live.request("live.stop", {"operator": "op-2", "viewers": 0, "reason": "no-viewers"})
    u.after(9)
    assert u.live.get_status()["streaming"]
    u.after(1.5)
    assert not u.live.get_status()["streaming"]
    stop = u.posted[-1]
    assert not stop["on"] and stop["detail"]["reason"] == "no-viewers" and stop["detail"]["duration_ms"] >= 40_000
    assert (stop["detail"]["viewers"], stop["detail"]["peak_viewers"]) == (0, 2)  # how many watched at most


def test_the_recording_stopping_and_the_time_limit_end_a_stream() -> None:
    u = Unit()
    u.live.tick()
    u.live.request("live.start", {"operator": "op-1", "viewers": 1})
    u.recording = False
    u.after(0.5)
    assert u.posted[-1]["detail"]["reason"] == "recording-stopped"
    u.recording = True
    u.live.tick()
    u.live.request("live.start", {"operator": "op-1", "viewers": 1})
    u.after(61)
    assert u.posted[-1]["detail"]["reason"] == "time-limit"


def test_an_operator_stop_ends_at_once_and_a_failed_connection_is_signed_as_such() -> None:
    u = Unit()
    u.live.request("live.start", {"operator": "op-1", "viewers": 1})
    u.live.request("live.stop", {"operator": "op-9", "viewers": 1, "reason": "requested"})
    assert u.posted[-1]["detail"] == {"by": "op-9", "viewers": 1, "peak_viewers": 1, "reason": "requested",
                                       "duration_ms": 0}
    u.live.request("live.start", {"operator": "op-1", "viewers": 1})
    Publisher.made[-1].on_end("no media connection")
    assert u.posted[-1]["detail"]["reason"] == "failed" and not u.live.get_status()["streaming"]


def test_auto_streams_while_recording_and_not_again_after_its_time_limit() -> None:
    u = Unit(auto_while_recording=True, max_duration_s=5.0)
    u.after(0.5)
    assert u.posted[-1]["on"] and u.posted[-1]["detail"]["trigger"] == "auto"
    u.after(6)
    assert u.posted[-1]["detail"]["reason"] == "time-limit"
    u.after(1)
    assert len(Publisher.made) == 1  # not restarted in the same recording
    u.recording = False
    u.after(1)
    u.recording = True
    u.after(1)
    assert len(Publisher.made) == 2


def test_requests_a_unit_refuses() -> None:
    off = LiveController(LiveConfig(), LiveFeed(15, 2), None, FakeClock(), lambda *a, **k: None,  # type: ignore[arg-type]
                         lambda: True, publisher_factory=Publisher)
    with pytest.raises(LiveRequestError, match="live.enabled"):
        off.request("live.start", {"operator": "op-1", "viewers": 1})
    u = Unit()
    with pytest.raises(LiveRequestError, match="viewers"):
        u.live.request("live.start", {"operator": "op-1", "viewers": -1})
    with pytest.raises(LiveRequestError, match="ice_servers"):
        u.live.request("live.start", {"operator": "op-1", "viewers": 1, "ice_servers": [{"urls": ["http://x"]}]})
    with pytest.raises(LiveRequestError, match="unknown"):
        u.live.request("live.pause", {})
    assert Publisher.made == []


def test_viewers_of_several_headquarters_nodes_add_up_and_one_nodes_last_leaving_does_not_stop_it() -> None:
    u = Unit()
    u.live.request("live.start", {"operator": "op-1", "viewers": 1, "node": "n1"})
    u.live.request("live.start", {"operator": "op-2", "viewers": 2, "node": "n2"})
    assert u.live.get_status()["viewers"] == 3
    u.live.request("live.stop", {"operator": "op-2", "viewers": 0, "reason": "no-viewers", "node": "n2"})
    assert u.live.get_status()["viewers"] == 1
    u.after(30)
    assert u.live.get_status()["streaming"]  # node n1's viewer still watches
    u.live.request("live.stop", {"operator": "op-1", "viewers": 0, "reason": "no-viewers", "node": "n1"})
    u.after(10.5)
    assert not u.live.get_status()["streaming"]
    assert u.posted[-1]["detail"]["peak_viewers"] == 3 and u.posted[-1]["detail"]["reason"] == "no-viewers"
    u.live.request("live.start", {"operator": "op-1", "viewers": 1, "node": "n1"})  # a new stream counts afresh
    assert u.live.get_status()["viewers"] == 1
