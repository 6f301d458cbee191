"""The operations room's pure checks: same origin for state changes, CSRF tokens, where to go
after signing in, audit filters."""

from __future__ import annotations

import pytest

from hq.web.audit_pages import FilterError, parse_filters, utc_text
from hq.web.auth import safe_next
from hq.web.security import request_host, same_origin, token_matches

ORIGIN = "https://hq.example:8443"


def test_a_state_change_must_come_from_this_origin() -> None:
    assert same_origin([("origin", "https://hq.example:8443")], ORIGIN)
    assert same_origin([("origin", "HTTPS://HQ.EXAMPLE:8443/")], ORIGIN)
    assert not same_origin([("origin", "https://evil.example")], ORIGIN)
    assert not same_origin([("origin", "null")], ORIGIN)
    assert not same_origin([("origin", ORIGIN), ("origin", ORIGIN)], ORIGIN)
    assert same_origin([("referer", "https://hq.example:8443/ops/audit?x=1")], ORIGIN)
    assert not same_origin([("referer", "https://hq.example:8444/ops/")], ORIGIN)
    assert not same_origin([], ORIGIN)  # neither header: refused


def test_csrf_tokens_compare_exactly() -> None:
    assert token_matches("abc", "abc")
    assert not token_matches("abc", "abd")
    assert not token_matches("abc", None)
    assert not token_matches("abc", "")


def test_the_host_behind_a_proxy_is_the_forwarded_one() -> None:
    headers = [("host", "127.0.0.1:8080"), ("x-forwarded-host", "hq.example:8443")]
    assert request_host(headers, behind_proxy=True) == "hq.example:8443"
    assert request_host(headers, behind_proxy=False) == "127.0.0.1:8080"
    assert request_host([("host", "a"), ("host", "b")], behind_proxy=False) is None


@pytest.mark.parametrize("target, expected", [
    ("/ops/audit?user=ada", "/ops/audit?user=ada"),
    ("/ops/", "/ops/"),
    ("https://evil.example/ops/", "/ops/"),
    ("//evil.example/ops/", "/ops/"),
    ("/ops/\\evil", "/ops/"),
    ("/v1/heartbeat", "/ops/"),
    ("/ops/x\ny", "/ops/"),
    (None, "/ops/"),
])
def test_after_sign_in_only_pages_of_this_application(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected


def test_audit_filters_read_utc_times_and_refuse_garbage() -> None:
    filters = parse_filters({"user": "ada", "from": "2026-12-03T10:00", "to": "2026-12-03T11:00:30"})
    query = filters.query()
    assert query.actor == "ada" and query.target is None
    assert query.from_ns == 1_796_292_000 * 1_000_000_000
    assert query.to_ns == query.from_ns + 3630 * 1_000_000_000
    assert utc_text(query.from_ns) == "2026-12-03T10:00:00.000Z"
    with pytest.raises(FilterError, match="'from' is not a time"):
        parse_filters({"from": "yesterday"})
    with pytest.raises(FilterError, match="control characters"):
        parse_filters({"user": "ada\x1b[31m"})
