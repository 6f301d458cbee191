"""Where headquarters keeps evidence, as one ``--store-url``: the data dir's files (the embedded
default) or an S3 bucket with Object Lock (docs/deployment-hq.md, "Object store").

    s3://BUCKET?endpoint=http://127.0.0.1:8333&region=us-east-1&retention_days=90
               &mode=COMPLIANCE&staging_bucket=BUCKET-staging&staging_expiry_days=7
               &conditional_writes=true

``parse_store_url`` is pure; ``open_stores`` builds the evidence store and the upload store it names
(boto3 is imported only for an s3:// URL, so the embedded default runs without it). Credentials
never appear in the URL: boto3 reads them from its standard chain (environment, shared files).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from hq.storage import EvidenceStore, FileEvidenceStore, UploadArea, UploadStore

# The Object Lock set at upload is the statutory minimum only (it can be extended, never shortened;
# categories decide the rest, hq/lifecycle.py): 90 days, the shortest many US states allow for
# footage of no evidentiary value. A site sets its own law's minimum.
DEFAULT_RETENTION_DAYS = 90
DEFAULT_STAGING_EXPIRY_DAYS = 7
MODES = ("COMPLIANCE", "GOVERNANCE")
# S3's bucket naming rules (3-63 lower-case letters, digits, dots and hyphens).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PARAMS = {"endpoint", "region", "retention_days", "mode", "staging_bucket", "staging_expiry_days",
           "conditional_writes"}


class StoreUrlError(ValueError):
    """A store URL that cannot be used; the message says what is wrong and what to write instead."""


@dataclass(frozen=True, slots=True)
class S3Config:
    bucket: str
    staging_bucket: str
    endpoint: str | None = None
    region: str | None = None
    retention_days: int = DEFAULT_RETENTION_DAYS
    mode: str = "COMPLIANCE"
    staging_expiry_days: int = DEFAULT_STAGING_EXPIRY_DAYS
    conditional_writes: bool = True


def _bucket(name: str, what: str) -> str:
    if not _BUCKET.match(name) or ".." in name:
        raise StoreUrlError(f"{what} {name!r} is not a valid S3 bucket name (3-63 of a-z, 0-9, '.', '-')")
    return name


def _days(text: str, what: str, lowest: int) -> int:
    if not text.isdigit() or len(text) > 6 or int(text) < lowest:
        raise StoreUrlError(f"{what}={text!r}: give a whole number of days, at least {lowest}")
    return int(text)


def parse_store_url(url: str) -> S3Config:
    """The S3 settings of ``s3://BUCKET?...``; StoreUrlError names what is wrong."""
    parts = urlsplit(url)
    if parts.scheme != "s3":
        raise StoreUrlError(f"store URL {url!r}: only s3://BUCKET?... is known (leave it out for the data dir's files)")
    if parts.username or parts.password:
        raise StoreUrlError("a store URL never carries credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
                            "or a shared credentials file (boto3's standard chain)")
    if parts.path not in ("", "/") or parts.fragment:
        raise StoreUrlError(f"store URL {url!r}: give only the bucket (s3://BUCKET?...), no key prefix")
    bucket = _bucket(parts.netloc, "bucket")
    query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=False)
    unknown = sorted(set(query) - _PARAMS)
    if unknown:
        known = ", ".join(sorted(_PARAMS))
        raise StoreUrlError(f"store URL: unknown parameter(s) {', '.join(unknown)}; known: {known}")
    one: dict[str, str] = {}
    for name, values in query.items():
        if len(values) != 1:
            raise StoreUrlError(f"store URL: {name} is given {len(values)} times")
        one[name] = values[0]
    endpoint = one.get("endpoint")
    if endpoint is not None and urlsplit(endpoint).scheme not in ("http", "https"):
        raise StoreUrlError(f"endpoint={endpoint!r}: give http(s)://HOST:PORT of the S3 server")
    mode = one.get("mode", "COMPLIANCE").upper()
    if mode not in MODES:
        raise StoreUrlError(f"mode={one['mode']!r}: give COMPLIANCE (nobody can shorten it) or GOVERNANCE")
    staging = _bucket(one.get("staging_bucket", f"{bucket}-staging"), "staging_bucket")
    if staging == bucket:
        raise StoreUrlError("staging_bucket must differ from the evidence bucket (its parts are deleted after ingest)")
    writes = one.get("conditional_writes", "true").lower()
    if writes not in ("true", "false"):
        raise StoreUrlError(f"conditional_writes={writes!r}: give true or false")
    return S3Config(
        bucket=bucket,
        staging_bucket=staging,
        endpoint=endpoint,
        region=one.get("region") or None,
        retention_days=_days(one.get("retention_days", str(DEFAULT_RETENTION_DAYS)), "retention_days", 1),
        mode=mode,
        staging_expiry_days=_days(
            one.get("staging_expiry_days", str(DEFAULT_STAGING_EXPIRY_DAYS)), "staging_expiry_days", 1
        ),
        conditional_writes=writes == "true",
    )


def open_evidence_store(
    data_dir: Path, store_url: str | None, now_ns: Callable[[], int] = time.time_ns, session: Any = None
) -> EvidenceStore:
    """The evidence store of ``store_url`` (None: the data dir's files), for commands that only read
    evidence (export). For S3 the bucket is checked, and made with Object Lock if absent."""
    if store_url is None:
        return FileEvidenceStore(data_dir)
    from hq.s3store import S3EvidenceStore, connect

    config = parse_store_url(store_url)
    store = S3EvidenceStore(connect(config, session), config, now_ns)
    store.prepare()
    return store


def open_stores(
    data_dir: Path,
    store_url: str | None,
    now_ns: Callable[[], int] = time.time_ns,
    session: Any = None,
) -> tuple[EvidenceStore, UploadStore]:
    """The evidence store and upload store of ``store_url`` (None: the data dir's files).

    For S3 the buckets are checked (and made if absent: the evidence bucket with Object Lock);
    completed uploads are spooled under ``data_dir/spool`` for verification. ``session`` is a
    boto3 Session (tests pass one with the test server's credentials; the service uses boto3's
    standard chain).
    """
    if store_url is None:
        return FileEvidenceStore(data_dir), UploadArea(data_dir)
    from hq.s3store import S3EvidenceStore, connect
    from hq.s3uploads import S3UploadStore

    config = parse_store_url(store_url)
    client = connect(config, session)
    store = S3EvidenceStore(client, config, now_ns)
    store.prepare()
    uploads = S3UploadStore(client, config, data_dir / "spool")
    uploads.prepare()
    return store, uploads
