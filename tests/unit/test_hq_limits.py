"""Headquarters' bounds without a server: connection caps, the per-source token bucket, refusal
aggregation, origins and the checks made before a body (clocks injected)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hq.audit import Auditor
from hq.errors import ApiError
from hq.guard import OriginError, Origins, check_request, effective_method, parse_origin, source_of
from hq.index import SqliteIndex
from hq.limits import ConnectionLimits, RateLimiter, retry_after
from hq.refusals import RefusalLog


class Clock:
    def __init__(self) -> None:
        self.s = 1000.0

    def __call__(self) -> float:
        return self.s

    def ns(self) -> int:
        return int(self.s * 1e9)


def test_connections_are_capped_in_all_and_per_source() -> None:
    limits = ConnectionLimits(max_total=3, max_per_source=2)
    assert limits.admit("a") is None and limits.admit("a") is None
    assert "this source" in (limits.admit("a") or "")
    assert limits.admit("b") is None
    assert "connections open" in (limits.admit("c") or "")
    limits.release("a")
    assert limits.admit("c") is None
    assert (limits.total, limits.open_from("a"), limits.refused) == (3, 1, 2)


def test_the_token_bucket_refills_at_its_rate() -> None:
    clock = Clock()
    rate = RateLimiter(2.0, 3, clock, max_sources=2)
    assert [rate.take("x") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = rate.take("x")
    assert wait == pytest.approx(0.5) and retry_after(wait) == "1"
    assert rate.limited("y") == 0.0  # another source has its own bucket
    clock.s += 0.5
    assert rate.limited("x") == 0.0 and rate.take("x") == 0.0
    assert rate.take("x") > 0
    rate.take("y")
    rate.take("z")  # a third source: the least recently used bucket ("x") is forgotten
    assert rate.limited("x") == 0.0


def test_refusals_are_aggregated_per_source_and_reason_with_a_cap(tmp_path: Path) -> None:
    clock = Clock()
    with SqliteIndex(tmp_path / "index.sqlite") as index:
        log = RefusalLog(Auditor(index, "hq-api", clock.ns), clock.ns, window_s=60, max_records=3)
        for _ in range(50):
            log.refused("10.0.0.1", "missing", "/v1/uploads/?secret=1", None)
        log.refused("10.0.0.1", "bad-signature", "/v1/heartbeat", "unit-\x1b[2J" + "k" * 100)
        for i in range(20):  # the cap: records per window
            log.refused(f"10.0.0.{i + 2}", "missing", "/x", None)
        assert len(index.audit_log("auth")) == 3  # written at once, up to the cap
        clock.s += 59
        log.flush_due()
        assert len(index.audit_log("auth")) == 3
        clock.s += 1
        log.flush_due()
        records = index.audit_log("auth")
        assert sum(r.detail["count"] for r in records) == 71
        assert all(r.actor == "unauthenticated" and "?" not in r.target for r in records)
        [signed] = [r for r in records if r.detail["reason"] == "bad-signature"]
        claimed = signed.detail["claimed_key_id"]
        assert claimed.startswith("unit-\\x1b[2J") and len(claimed) <= 64 and "\x1b" not in claimed
        # 3 written at once; then 3 sources counted each and the rest in one overflow record
        assert len(records) == 7 and {r.detail["reason"] for r in records} == {"missing", "bad-signature", "overflow"}


def test_origins_and_the_checks_before_the_body() -> None:
    assert parse_origin("HTTPS://HQ.Example:443/") == "https://hq.example"
    for bad in ("hq.example:8443", "https://hq.example/v1", "https://u:p@hq.example", "https://hq:99999"):
        with pytest.raises(OriginError):
            parse_origin(bad)
    origins = Origins(["https://hq.example:8443"])
    assert origins.match("HQ.EXAMPLE:8443") == "https://hq.example:8443"
    assert origins.match("hq.example") is None and origins.match("hq.example:notaport") is None
    admitted = check_request("PATCH", "/v1/uploads/" + "a" * 32 + "?x", [("Host", "hq.example:8443"),
                             ("Content-Length", "10")], origins, behind_proxy=False)
    assert (admitted.target_uri, admitted.length) == ("https://hq.example:8443/v1/uploads/" + "a" * 32 + "?x", 10)
    for headers, status in [
        ([("Host", "evil.example:8443"), ("Content-Length", "1")], 421),
        ([("Content-Length", "1")], 400),
        ([("Host", "hq.example:8443"), ("Content-Length", str(5 << 20))], 413),
        ([("Host", "hq.example:8443")], 411),
        ([("Host", "hq.example:8443"), ("Host", "hq.example:8443"), ("Content-Length", "1")], 400),
    ]:
        with pytest.raises(ApiError) as info:
            check_request("PATCH", "/v1/uploads/" + "a" * 32, headers, origins, behind_proxy=False)
        assert info.value.status == status, headers
    behind = [("Host", "10.0.0.5:8000"), ("X-Forwarded-Host", "hq.example:8443"), ("Content-Length", "0")]
    assert check_request("POST", "/v1/heartbeat", behind, origins, behind_proxy=True).target_uri.startswith(
        "https://hq.example:8443/")
    with pytest.raises(ApiError):
        check_request("POST", "/v1/heartbeat", behind, origins, behind_proxy=False)


def test_method_override_and_the_source_behind_a_proxy() -> None:
    assert effective_method("POST", "patch") == "PATCH" and effective_method("PATCH", None) == "PATCH"
    for method, override in [("POST", "GET"), ("PATCH", "DELETE"), ("POST", "PUT")]:
        with pytest.raises(ApiError):
            effective_method(method, override)
    xff = [("X-Forwarded-For", "1.2.3.4, 10.0.0.9")]
    assert source_of("127.0.0.1", xff, behind_proxy=True) == "10.0.0.9"
    assert source_of("127.0.0.1", xff, behind_proxy=False) == "127.0.0.1"
