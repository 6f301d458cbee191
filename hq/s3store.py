"""Evidence in an S3 bucket under Object Lock (boto3): the fleet implementation of ``EvidenceStore``.

Layout: ``evidence/<device>/<seq>.bcs``, ``quarantine/<device>/<name>.bcs`` (+ ``.json`` note) and
``records/<name>`` (the custody ledger's anchors),
every object written with ``ChecksumAlgorithm=SHA256`` and the file's expected SHA-256 (the server
refuses bytes that differ), an explicit ``ObjectLockMode``/``ObjectLockRetainUntilDate`` and
``If-None-Match: *``. ``put`` returns ``s3://BUCKET/KEY?versionId=VID`` only after the server has
acknowledged the write and its version id, SHA-256 and lock have been checked; the index keeps that
string as ``evidence.location``, so the version id needs no schema change.

Without conditional writes (``conditional_writes=false`` for a server that lacks them) a HEAD comes
first; two nodes racing past it both write a version, each locked and byte-identical (the same
verified entry), and the index points at one: nothing is lost or altered, one copy is spare.

boto3 is imported only by ``connect``: the embedded default runs without it.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import parse_qs, quote, unquote, urlsplit

from agent.evidence.format import segment_filename
from agent.textsafe import safe_text
from hq.lifecycle import Protection
from hq.records import valid_device_id
from hq.storage import StorageError
from hq.storeurl import S3Config

EVIDENCE_PREFIX = "evidence/"
QUARANTINE_PREFIX = "quarantine/"
RECORDS_PREFIX = "records/"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_MISSING = {"404", "NoSuchKey", "NoSuchBucket", "NotFound", "NoSuchVersion"}
_EXISTS = {"412", "PreconditionFailed", "409", "ConditionalRequestConflict"}


def connect(config: S3Config, session: Any = None) -> Any:
    """A boto3 S3 client for ``config``; credentials come from boto3's standard chain (or ``session``)."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError as exc:
        raise StorageError("an s3:// store needs boto3: pip install 'bodycam[fleet]'") from exc
    settings = Config(
        retries={"max_attempts": 5, "mode": "standard"},
        s3={"addressing_style": "path"} if config.endpoint else {},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_supported",
    )
    maker = session if session is not None else boto3.session.Session()
    return maker.client("s3", endpoint_url=config.endpoint, region_name=config.region, config=settings)


def s3_errors() -> tuple[type[Exception], ...]:
    """The exceptions boto3 raises for a failed request (botocore is there once a client is)."""
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError)


def error_code(exc: Exception) -> str:
    response: Mapping[str, Any] = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    return code or str(response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))


def describe(exc: Exception) -> str:
    """One line for a failed request: the server's code and message, or the client's error (text
    from outside, escaped: it reaches terminals and logs)."""
    response: Mapping[str, Any] = getattr(exc, "response", None) or {}
    err = response.get("Error", {})
    if err:
        return safe_text(f"{err.get('Code', '?')}: {err.get('Message', '') or 'no message'}")
    return safe_text(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


def sha256_b64(path: Path) -> str:
    """The base64 SHA-256 of a file, as S3's ChecksumSHA256 carries it."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1024 * 1024):
            h.update(block)
    return base64.b64encode(h.digest()).decode("ascii")


def location(bucket: str, key: str, version_id: str) -> str:
    return f"s3://{bucket}/{quote(key)}?versionId={quote(version_id, safe='')}"


def parse_location(text: str) -> tuple[str, str, str | None]:
    """(bucket, key, version id) of a location ``put`` returned."""
    parts = urlsplit(text)
    if parts.scheme != "s3" or not parts.hostname or len(parts.path) < 2:
        raise StorageError(f"location {text!r} is not s3://BUCKET/KEY?versionId=VID")
    version = parse_qs(parts.query).get("versionId", [None])[0]
    return parts.hostname, unquote(parts.path[1:]), version


def ensure_bucket(client: Any, bucket: str, region: str | None, where: str, object_lock: bool) -> bool:
    """Make ``bucket`` if it is absent (with Object Lock if asked); True if this call made it."""
    try:
        client.head_bucket(Bucket=bucket)
        return False
    except s3_errors() as exc:
        if error_code(exc) not in _MISSING:
            raise StorageError(f"{where}: {describe(exc)}") from exc
    extra: dict[str, Any] = {"ObjectLockEnabledForBucket": True} if object_lock else {}
    if region and region != "us-east-1":
        extra["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        client.create_bucket(Bucket=bucket, **extra)
    except s3_errors() as exc:
        if error_code(exc) == "BucketAlreadyOwnedByYou":  # another node made it first
            return False
        raise StorageError(f"{where}: creating it: {describe(exc)}") from exc
    return True


def check_bucket(client: Any, bucket: str, what: str) -> None:
    try:
        client.head_bucket(Bucket=bucket)
    except s3_errors() as exc:
        raise StorageError(f"reaching {what} bucket {bucket}: {describe(exc)}") from exc


class S3EvidenceStore:
    """Evidence and quarantined files as locked, versioned objects. Thread-safe (boto3 clients are)."""

    def __init__(self, client: Any, config: S3Config, now_ns: Callable[[], int]) -> None:
        self._s3 = client
        self.config = config
        self.bucket = config.bucket
        self._now_ns = now_ns

    # -- the bucket -------------------------------------------------------------------------

    def prepare(self) -> None:
        """Make the bucket with Object Lock (default retention: the configured mode and days) if
        absent; refuse a bucket without Object Lock, where evidence could be deleted."""
        where = f"opening evidence bucket {self.bucket}"
        if ensure_bucket(self._s3, self.bucket, self.config.region, where, object_lock=True):
            self._set_default_retention(where)
        try:
            conf = self._s3.get_object_lock_configuration(Bucket=self.bucket)["ObjectLockConfiguration"]
        except s3_errors() as exc:
            raise StorageError(f"{where}: it has no Object Lock ({describe(exc)}); evidence there could be "
                               "deleted: name a bucket created with Object Lock, or a new one") from exc
        if conf.get("ObjectLockEnabled") != "Enabled":
            raise StorageError(f"{where}: Object Lock is not enabled; name a bucket created with it, or a new one")

    def check(self) -> None:
        """Whether the bucket answers (``/readyz``); StorageError saying why not."""
        check_bucket(self._s3, self.bucket, "evidence")

    def _set_default_retention(self, where: str) -> None:
        rule = {"DefaultRetention": {"Mode": self.config.mode, "Days": self.config.retention_days}}
        try:
            self._s3.put_object_lock_configuration(
                Bucket=self.bucket, ObjectLockConfiguration={"ObjectLockEnabled": "Enabled", "Rule": rule}
            )
        except s3_errors() as exc:
            raise StorageError(f"{where}: setting its default retention: {describe(exc)}") from exc

    # -- keys -------------------------------------------------------------------------------

    @staticmethod
    def evidence_key(device_id: str, seq: int) -> str:
        if not valid_device_id(device_id):
            raise StorageError(f"device id {device_id!r} cannot name an object")
        if seq < 0:
            raise StorageError(f"seq {seq} is negative")
        return f"{EVIDENCE_PREFIX}{device_id}/{segment_filename(seq)}"

    def _url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def retain_until(self) -> dt.datetime:
        now = dt.datetime.fromtimestamp(self._now_ns() / 1e9, tz=dt.UTC)
        return now + dt.timedelta(days=self.config.retention_days)

    # -- EvidenceStore ----------------------------------------------------------------------

    def put(self, device_id: str, seq: int, source: Path) -> str:
        key = self.evidence_key(device_id, seq)
        found = self._put_locked(key, source, f"storing {device_id} seq {seq} as {self._url(key)}")
        source.unlink(missing_ok=True)
        return found

    def get(self, device_id: str, seq: int, location: str | None = None) -> BinaryIO:
        bucket, key, version = (self.bucket, self.evidence_key(device_id, seq), None)
        if location is not None:
            bucket, key, version = parse_location(location)
        args: dict[str, Any] = {"Bucket": bucket, "Key": key, "ChecksumMode": "ENABLED"}
        if version is not None:
            args["VersionId"] = version
        try:
            body: BinaryIO = self._s3.get_object(**args)["Body"]
        except s3_errors() as exc:
            raise StorageError(f"reading {device_id} seq {seq} from s3://{bucket}/{key}: {describe(exc)}") from exc
        return body

    def exists(self, device_id: str, seq: int) -> bool:
        key = self.evidence_key(device_id, seq)
        return self._head(key, f"checking {self._url(key)}") is not None

    def quarantine(self, device_id: str, name: str, source: Path, reason: Mapping[str, Any]) -> str:
        if not valid_device_id(device_id) or not _NAME.match(name):
            raise StorageError(f"quarantining {name!r} of {device_id!r}: not a usable object name")
        stem = f"{QUARANTINE_PREFIX}{device_id}/{name}"
        note = json.dumps(dict(reason), indent=2, sort_keys=True).encode("utf-8") + b"\n"
        self._put_bytes(f"{stem}.json", note, f"writing the quarantine note {self._url(stem)}.json")
        found = self._put_locked(f"{stem}.bcs", source, f"quarantining {source.name} as {self._url(stem)}.bcs")
        source.unlink(missing_ok=True)
        return found

    # -- the lifecycle: legal holds, locks, deletion, records ---------------------------------

    def _version_of(self, device_id: str, seq: int, location: str | None) -> tuple[str, str | None]:
        """(key, version id) of a stored entry; without a location, its current version."""
        if location is not None:
            bucket, key, version = parse_location(location)
            if bucket != self.bucket:
                raise StorageError(f"{device_id} seq {seq} is in bucket {bucket}, not this store's {self.bucket}")
            return key, version
        key = self.evidence_key(device_id, seq)
        head = self._head(key, f"finding {self._url(key)}")
        return key, None if head is None else str(head["VersionId"])

    def protection(self, device_id: str, seq: int, location: str | None = None) -> Protection:
        key, version = self._version_of(device_id, seq, location)
        head = self._head(key, f"reading the lock of {self._url(key)}", version)
        if head is None:
            return Protection(legal_hold=False, retain_until_ns=None)
        until = head.get("ObjectLockRetainUntilDate")
        return Protection(legal_hold=head.get("ObjectLockLegalHoldStatus") == "ON",
                          retain_until_ns=None if until is None else int(until.timestamp() * 1e9))

    def set_hold(self, device_id: str, seq: int, on: bool, location: str | None = None) -> None:
        key, version = self._version_of(device_id, seq, location)
        where = f"{'setting' if on else 'releasing'} the legal hold of {self._url(key)}"
        status = "ON" if on else "OFF"
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if version is not None:
            args["VersionId"] = version
        try:
            self._s3.put_object_legal_hold(LegalHold={"Status": status}, **args)
            kept = self._s3.get_object_legal_hold(**args)["LegalHold"]["Status"]
        except s3_errors() as exc:
            raise StorageError(f"{where}: {describe(exc)}") from exc
        if kept != status:
            raise StorageError(f"{where}: the server keeps {kept!r}")

    def delete(self, device_id: str, seq: int, location: str | None = None) -> None:
        key, version = self._version_of(device_id, seq, location)
        if version is None:
            return  # nothing stored under that key
        try:
            self._s3.delete_object(Bucket=self.bucket, Key=key, VersionId=version)
        except s3_errors() as exc:
            if error_code(exc) in _MISSING:
                return
            raise StorageError(f"deleting {self._url(key)} version {version}: refused, {describe(exc)}") from exc

    def put_record(self, name: str, data: bytes) -> str:
        key = self._record_key(name)
        return self._put_bytes(key, data, f"keeping record {self._url(key)}")

    def get_record(self, name: str) -> bytes | None:
        key = self._record_key(name)
        try:
            body: bytes = self._s3.get_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")["Body"].read()
        except s3_errors() as exc:
            if error_code(exc) in _MISSING:
                return None
            raise StorageError(f"reading record {self._url(key)}: {describe(exc)}") from exc
        return body

    def list_records(self, prefix: str) -> list[str]:
        names: list[str] = []
        try:
            pages = self._s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=RECORDS_PREFIX + prefix)
            for page in pages:
                names.extend(str(o["Key"])[len(RECORDS_PREFIX):] for o in page.get("Contents", []))
        except s3_errors() as exc:
            raise StorageError(f"listing records under {self._url(RECORDS_PREFIX + prefix)}: {describe(exc)}") from exc
        return sorted(names)

    @staticmethod
    def _record_key(name: str) -> str:
        if not all(_NAME.match(part) for part in name.split("/")):
            raise StorageError(f"record name {name!r}: use letters, digits, '.', '-', '_' and '/' between parts")
        return RECORDS_PREFIX + name

    # -- writes -----------------------------------------------------------------------------

    def _put_locked(self, key: str, source: Path, where: str) -> str:
        try:
            digest = sha256_b64(source)
        except OSError as exc:
            raise StorageError(f"{where}: reading {source.name}: {exc.strerror}") from exc
        with source.open("rb") as body:
            return self._write(key, body, digest, where, "application/octet-stream")

    def _put_bytes(self, key: str, data: bytes, where: str) -> str:
        digest = base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")
        return self._write(key, data, digest, where, "application/json")

    def _write(self, key: str, body: BinaryIO | bytes, digest: str, where: str, content_type: str) -> str:
        if not self.config.conditional_writes:
            held = self._head(key, where)
            if held is not None:
                return self._already(key, held, digest, where)
        until = self.retain_until()
        args: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": key,
            "Body": body,
            "ContentType": content_type,
            "ChecksumAlgorithm": "SHA256",
            "ChecksumSHA256": digest,
            "ObjectLockMode": self.config.mode,
            "ObjectLockRetainUntilDate": until,
        }
        if self.config.conditional_writes:
            args["IfNoneMatch"] = "*"
        try:
            answer = self._s3.put_object(**args)
        except s3_errors() as exc:
            if self.config.conditional_writes and error_code(exc) in _EXISTS:
                held = self._head(key, where)
                if held is not None:
                    return self._already(key, held, digest, where)
            raise StorageError(f"{where}: {describe(exc)}") from exc
        version = answer.get("VersionId")
        if not version or version == "null":
            raise StorageError(f"{where}: the server kept no version id (is Object Lock enabled on the bucket?)")
        if answer.get("ChecksumSHA256") != digest:
            raise StorageError(f"{where}: the server acknowledged SHA-256 {answer.get('ChecksumSHA256')!r}, "
                               f"not the file's {digest}")
        self._check_lock(key, version, until, where)
        return location(self.bucket, key, version)

    def _check_lock(self, key: str, version: str, until: dt.datetime, where: str) -> None:
        """Read back the version written: locked in our mode until at least ``until`` (to the second)."""
        head = self._head(key, where, version)
        if head is None:
            raise StorageError(f"{where}: version {version} is not there after the write")
        mode, kept = head.get("ObjectLockMode"), head.get("ObjectLockRetainUntilDate")
        if mode != self.config.mode or kept is None or kept < until - dt.timedelta(seconds=1):
            raise StorageError(f"{where}: the server did not lock it ({mode} until {kept}): refusing to receipt it")

    def _already(self, key: str, held: Mapping[str, Any], digest: str, where: str) -> str:
        """The key is taken: the same bytes (a crash between storing and indexing) are the answer."""
        if held.get("ChecksumSHA256") != digest:
            raise StorageError(f"{where}: the bucket already holds other bytes under that key")
        return location(self.bucket, key, str(held["VersionId"]))

    def _head(self, key: str, where: str, version: str | None = None) -> dict[str, Any] | None:
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "ChecksumMode": "ENABLED"}
        if version is not None:
            args["VersionId"] = version
        try:
            head: dict[str, Any] = self._s3.head_object(**args)
        except s3_errors() as exc:
            if error_code(exc) in _MISSING:
                return None
            raise StorageError(f"{where}: {describe(exc)}") from exc
        return head
