"""Requests to units in the index, on both engines: delivery once across nodes, redelivery of
unanswered ones, expiry, one result, and rows no raw connection can change or remove."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hq.index import HqIndexError, SqlIndex
from hq.records import UnitRequest
from tests.integration.index_util import raw_error, raw_execute, run_together

T0_NS = 1_790_000_000_000_000_000
S = 1_000_000_000


@pytest.fixture
def index(db_url: str) -> Iterator[SqlIndex]:
    with SqlIndex.open(db_url, auto_migrate=True) as opened:
        opened.enroll("unit-1", "pem", "ab" * 32, T0_NS)
        opened.enroll("unit-2", "pem", "cd" * 32, T0_NS)
        yield opened


def request(n: int, device_id: str = "unit-1", expires_ns: int = T0_NS + 3600 * S) -> UnitRequest:
    return UnitRequest(request_id=f"{n:032x}", device_id=device_id, kind="background.upload",
                       params={"from_utc_ns": 1, "to_utc_ns": 2}, requested_by="p-1", issued_utc_ns=T0_NS + n,
                       expires_utc_ns=expires_ns, signed=b"signed-%d" % n)


def test_requests_are_delivered_redelivered_when_unanswered_and_answered_once(index: SqlIndex) -> None:
    for n in range(3):
        index.add_request(request(n))
    index.add_request(request(9, "unit-2"))
    index.add_request(request(7, expires_ns=T0_NS + 10 * S))
    now = T0_NS + 20 * S
    assert index.devices_with_requests(["unit-1", "unit-2", "unit-3"], now, now - 300 * S) == {"unit-1", "unit-2"}
    assert index.take_requests("unit-1", now, now - 300 * S, 2) == [b"signed-0", b"signed-1"]
    assert index.take_requests("unit-1", now, now - 300 * S, 16) == [b"signed-2"]  # the expired one never
    assert index.take_requests("unit-1", now + S, now + S - 300 * S, 16) == []
    assert index.answer_request(f"{1:032x}", "done", b"result", now + 2 * S)
    assert not index.answer_request(f"{1:032x}", "failed", b"other", now + 3 * S)  # answered once
    later = now + 301 * S  # past the redelivery time: what has no result comes again
    assert index.take_requests("unit-1", later, later - 300 * S, 16) == [b"signed-0", b"signed-2"]
    kept = index.request(f"{1:032x}")
    assert kept is not None and (kept.state, kept.outcome, kept.result, kept.deliveries) == (
        "answered", "done", b"result", 1)
    again = index.request(f"{0:032x}")
    assert again is not None and (again.state, again.deliveries) == ("delivered", 2)
    assert [r.request_id for r in index.requests("unit-2")] == [f"{9:032x}"]


def test_two_nodes_polling_for_one_unit_hand_out_each_request_once(db_url: str, index: SqlIndex) -> None:
    for n in range(60):
        index.add_request(request(n))
    nodes = [SqlIndex.open(db_url) for _ in range(2)]
    taken: list[list[bytes]] = [[] for _ in nodes]

    def work(i: int) -> None:
        for _ in range(40):
            taken[i].extend(nodes[i].take_requests("unit-1", T0_NS + S, T0_NS - 300 * S, 3))

    try:
        run_together(work, len(nodes))
    finally:
        for node in nodes:
            node.close()
    handed = sorted(b for per_node in taken for b in per_node)
    assert handed == sorted(b"signed-%d" % n for n in range(60))


def test_requests_cannot_be_removed_or_rewritten_even_on_a_raw_connection(index: SqlIndex, db_url: str) -> None:
    index.add_request(request(1))
    assert index.answer_request(f"{1:032x}", "done", b"result", T0_NS)
    sqlite = db_url.startswith("sqlite")
    statements = ["DELETE FROM unit_requests", "UPDATE unit_requests SET outcome = 'failed'",
                  "UPDATE unit_requests SET signed = " + ("X'00'" if sqlite else "decode('00', 'hex')")]
    if not sqlite:
        statements.append("TRUNCATE unit_requests")
    for sql in statements:
        with pytest.raises(raw_error(db_url), match="never deleted|signed once and answered once"):
            raw_execute(db_url, sql)
    with pytest.raises(HqIndexError):
        index.add_request(request(1))  # one request id, one request
    kept = index.request(f"{1:032x}")
    assert kept is not None and (kept.outcome, kept.result) == ("done", b"result")
