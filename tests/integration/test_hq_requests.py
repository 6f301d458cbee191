"""The request channel from both ends: headquarters queues a signed request (the real CLI), the
unit's channel (agent/sync/requests.py) takes it through a long poll from the real service over
HTTPS on 127.0.0.1, checks it, runs its handler and sends back a signed result."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.evidence.hqrequest import make_request, open_result
from agent.evidence.keys import load_receipt_public
from agent.store import Store
from agent.sync.client import HqClient
from agent.sync.requests import HqRequest, Outcome, RequestChannel, RequestHandlers
from drivers.system_clock import SystemClock
from hq.cli import main as hq_main
from hq.keygen import keygen
from hq.requests import RequestError
from tests.evidence_util import ChainBuilder
from tests.integration.test_hq_sync import Hq, enroll, start_hq

DEVICE = "unit-rq"
NS = 1_000_000_000


@pytest.fixture
def hq(tmp_path: Path) -> Iterator[Hq]:
    keygen(tmp_path / "H" / "keys")
    running = start_hq(tmp_path / "H")
    yield running
    running.stop()


class Rig:
    """A unit's store, channel and one recording handler against a running headquarters."""

    def __init__(self, at: Hq, tmp: Path) -> None:
        self.unit = ChainBuilder(tmp / "unit", device_id=DEVICE)
        enroll(at, self.unit, tmp)
        self.clock = SystemClock()
        self.store = Store(tmp / "unit-index.sqlite", self.clock)
        self.calls: list[HqRequest] = []
        handlers = RequestHandlers()
        handlers.register("background.upload", self.handle)
        port, ca = at.port, at.keys / "ca.pem"
        self.channel = RequestChannel(
            lambda: HqClient(f"https://127.0.0.1:{port}/", ca, DEVICE, self.unit.signer, self.clock),
            self.store, self.unit.signer, DEVICE, load_receipt_public(at.keys / "hq.pub"), self.clock, handlers)

    def handle(self, request: HqRequest) -> Outcome:
        self.calls.append(request)
        return Outcome("partial", {"note": "what is left", "from_utc_ns": request.params["from_utc_ns"]})

    def close(self) -> None:
        self.channel.stop()
        self.store.close()


def queue(at: Hq, reason: str = "complaint 2291") -> int:
    return hq_main(["background", "request", DEVICE, "--data-dir", str(at.data), "--from", "2026-12-03T09:00:00Z",
                    "--to", "2026-12-03T09:05:00Z", "--reason", reason])


def test_a_request_queued_by_the_cli_reaches_a_waiting_poll_and_its_signed_result_is_kept(
    hq: Hq, tmp_path: Path
) -> None:
    rig = Rig(hq, tmp_path)
    try:
        assert rig.channel.run_once(0) == 0  # nothing queued: answered at once
        came: list[int] = []
        poll = threading.Thread(target=lambda: came.append(rig.channel.run_once(20)))
        started = time.monotonic()
        poll.start()
        time.sleep(0.5)  # the poll is open at headquarters
        assert queue(hq) == 0
        poll.join(30)
        assert came == [1]
        # another process queued it: the node's next look at the index (every second) woke the poll
        assert time.monotonic() - started < 20
        assert len(rig.calls) == 1 and rig.calls[0].params["to_utc_ns"] - rig.calls[0].params["from_utc_ns"] == 300 * NS
        (kept,) = hq.index.requests(DEVICE)
        assert (kept.state, kept.outcome, kept.deliveries) == ("answered", "partial", 1)
        assert kept.result is not None
        result = open_result(kept.result, rig.unit.signer.public_key())
        assert result["detail"]["note"] == "what is left"
        assert rig.calls[0].requested_by == kept.requested_by and kept.requested_by.startswith("p-")
        events = [(r.event_type, r.outcome) for r in hq.index.audit_log() if r.event_type.startswith("unit-request")]
        assert events == [("unit-request", "ok"), ("unit-request-result", "ok")]
        assert hq.index.audit_log("unit-request")[0].detail["reason"] == "complaint 2291"
        unit_audit = [(a.action, a.outcome) for a in rig.store.audit_tail(10) if a.actor == "hq-requests"]
        assert unit_audit == [("hq-request", "ok")]
        # Delivered again (its answer lost on the way): answered from the store, never run twice.
        rig.channel.take(kept.signed)
        assert len(rig.calls) == 1
    finally:
        rig.close()


def test_a_request_not_signed_by_headquarters_is_refused_recorded_and_reported(hq: Hq, tmp_path: Path) -> None:
    rig = Rig(hq, tmp_path)
    try:
        now = time.time_ns()
        forged = make_request({
            "request_id": "ab" * 16, "device_id": DEVICE, "kind": "background.upload",
            "params": {"from_utc_ns": now - 600 * NS, "to_utc_ns": now}, "issued_utc_ns": now,
            "expires_utc_ns": now + 3600 * NS, "requested_by": "p-mallory",
        }, ed25519.Ed25519PrivateKey.generate())
        rig.channel.take(forged)
        assert rig.calls == []
        (entry,) = [a for a in rig.store.audit_tail(10) if a.actor == "hq-requests"]
        assert (entry.action, entry.target, entry.outcome) == ("hq-request", "ab" * 16, "refused")
        assert "not signed by headquarters" in entry.detail["reason"]
        # the forgery is not kept under the id it claims: the genuine request with that id would still run
        assert rig.store.hq_request_result("ab" * 16) is None
        # headquarters heard of it, and keeps it in its audit log only
        (record,) = hq.index.audit_log("unit-request-result")
        assert (record.actor, record.outcome, record.detail["unknown_request"]) == (DEVICE, "refused", True)
        assert hq.index.requests(DEVICE) == []
        assert rig.channel.get_status()["refused"] == 1
    finally:
        rig.close()


def test_a_result_for_a_request_of_another_unit_is_refused(hq: Hq, tmp_path: Path) -> None:
    rig = Rig(hq, tmp_path)
    try:
        assert queue(hq) == 0
        assert rig.channel.run_once(0) == 1
        (kept,) = hq.index.requests(DEVICE)
        other = ChainBuilder(tmp_path / "other", device_id="unit-other")
        enroll(hq, other, tmp_path)
        # the other unit claims to answer this unit's request: headquarters keeps nothing of it
        body = rig.store.hq_request_result(kept.request_id)
        assert body is not None
        try:
            hq.server.service.requests.record_result("unit-other", body, other.signer.public_key())
        except RequestError as exc:
            assert "does not verify" in str(exc)
        else:
            raise AssertionError("a result signed by another unit was kept")
        assert hq.index.request(kept.request_id) == kept  # unchanged: answered once, by its unit
    finally:
        rig.close()


def test_the_cli_refuses_a_request_without_reason_or_for_an_unknown_unit(hq: Hq) -> None:
    assert queue(hq, reason=" ") == 1
    assert queue(hq) == 1  # DEVICE is not enrolled here
    refusals = [r.detail["refusal"] for r in hq.index.audit_log("unit-request")]
    assert len(refusals) == 2 and "give a reason" in refusals[0] and "not an enrolled unit" in refusals[1]
    assert hq.index.requests() == []
