"""The store URL: what it accepts, and one clear line for what it refuses."""

from __future__ import annotations

import pytest

from hq.s3store import location, parse_location
from hq.storage import StorageError
from hq.storeurl import DEFAULT_RETENTION_DAYS, S3Config, StoreUrlError, parse_store_url


def test_a_bare_bucket_takes_the_documented_defaults() -> None:
    assert parse_store_url("s3://evidence") == S3Config(bucket="evidence", staging_bucket="evidence-staging")
    assert DEFAULT_RETENTION_DAYS == 90


def test_every_parameter_is_read() -> None:
    cfg = parse_store_url(
        "s3://ev-1?endpoint=http://127.0.0.1:8333&region=eu-west-1&retention_days=30&mode=governance"
        "&staging_bucket=stage-1&staging_expiry_days=2&conditional_writes=false"
    )
    assert cfg == S3Config("ev-1", "stage-1", "http://127.0.0.1:8333", "eu-west-1", 30, "GOVERNANCE", 2, False)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("file:///srv/hq", "only s3://BUCKET"),
        ("s3://AK:s3cr3tval@evidence", "never carries credentials"),
        ("s3://evidence/some/prefix", "no key prefix"),
        ("s3://Evidence", "not a valid S3 bucket name"),
        ("s3://ev", "not a valid S3 bucket name"),
        ("s3://evidence?retention_days=0", "at least 1"),
        ("s3://evidence?retention_days=ten", "whole number of days"),
        ("s3://evidence?mode=LEGAL", "give COMPLIANCE"),
        ("s3://evidence?staging_bucket=evidence", "must differ"),
        ("s3://evidence?endpoint=127.0.0.1:8333", "http(s)://HOST:PORT"),
        ("s3://evidence?retention=5", "unknown parameter(s) retention"),
        ("s3://evidence?mode=COMPLIANCE&mode=GOVERNANCE", "mode is given 2 times"),
        ("s3://evidence?conditional_writes=maybe", "give true or false"),
    ],
)
def test_bad_urls_are_refused_saying_why(url: str, says: str) -> None:
    with pytest.raises(StoreUrlError) as caught:
        parse_store_url(url)
    assert says in str(caught.value)
    assert "s3cr3tval" not in str(caught.value)


def test_locations_name_bucket_key_and_version() -> None:
    where = location("ev-1", "evidence/unit-1/0000000003.bcs", "abc+/=")
    assert parse_location(where) == ("ev-1", "evidence/unit-1/0000000003.bcs", "abc+/=")
    with pytest.raises(StorageError, match="is not s3://BUCKET/KEY"):
        parse_location("/srv/hq/evidence/unit-1/0000000003.bcs")
