"""Uploads in progress in an S3 staging bucket, so any node can resume any upload: the fleet
implementation of ``UploadStore``.

Each accepted tus chunk is its own object ``staging/<upload>/<offset, 20 digits>``, written with
``If-None-Match: *`` and its SHA-256. The upload's size is the contiguous run of parts from offset 0;
a part that does not start at the running end (left by a node that died, or lost a race) is
ignored. S3 multipart upload does not fit: its parts must be at least 5 MiB except the last, units
send chunks of at most 4 MiB, and an open multipart upload cannot be read back before completion.

The staging bucket has no Object Lock (parts are removed after ingest); a lifecycle rule expires
what an abandoned upload left. A node caches the contiguous end it has seen per upload and lists
only the parts after it, so each PATCH costs one short listing, not a walk of every part (the
cache is only ever behind: parts are never removed while an upload is receiving, and a removed
upload's state in the index is final, so no node asks its size again).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hq.records import UPLOAD_ID
from hq.s3store import check_bucket, describe, ensure_bucket, error_code, s3_errors
from hq.storage import DIR_MODE, StorageError
from hq.storeurl import S3Config

log = logging.getLogger(__name__)

STAGING_PREFIX = "staging/"
OFFSET_DIGITS = 20
_EXISTS = {"412", "PreconditionFailed", "409", "ConditionalRequestConflict"}


@dataclass(frozen=True, slots=True)
class Part:
    offset: int
    size: int
    key: str


def contiguous(parts: list[Part], start: int = 0) -> tuple[int, list[Part]]:
    """The end of the run of parts from ``start`` and the parts in it, in offset order. A part that
    does not begin at the running end is not part of the upload (pure)."""
    end, run = start, []
    for part in sorted(parts, key=lambda p: (p.offset, p.key)):
        if part.offset == end and part.size > 0:
            run.append(part)
            end += part.size
    return end, run


def part_key(upload_id: str, offset: int) -> str:
    return f"{STAGING_PREFIX}{upload_id}/{offset:0{OFFSET_DIGITS}d}"


def parse_part(upload_id: str, key: str, size: int) -> Part | None:
    tail = key[len(f"{STAGING_PREFIX}{upload_id}/") :]
    if len(tail) != OFFSET_DIGITS or not tail.isdigit():
        return None
    return Part(int(tail), size, key)


@dataclass(slots=True)
class _Seen:
    """What this node last saw of an upload: the contiguous end and the key of its last part."""

    end: int = 0
    last_key: str = ""


class S3UploadStore:
    """Chunk objects in ``config.staging_bucket``; completed uploads spooled to ``spool_dir``.

    Thread-safe: the cache is guarded; the service serialises appends per upload within a node, and
    If-None-Match serialises them across nodes (a racing append at the same offset is refused).
    """

    def __init__(self, client: Any, config: S3Config, spool_dir: Path) -> None:
        self._s3 = client
        self.bucket = config.staging_bucket
        self._region = config.region
        self._expiry_days = config.staging_expiry_days
        self._conditional = config.conditional_writes
        self.spool_dir = spool_dir
        self._seen: dict[str, _Seen] = {}
        self._guard = threading.Lock()

    def prepare(self) -> None:
        """Make the staging bucket if absent, refuse one under Object Lock, set its expiry rule."""
        self.spool_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        where = f"opening staging bucket {self.bucket}"
        ensure_bucket(self._s3, self.bucket, self._region, where, object_lock=False)
        try:
            conf = self._s3.get_object_lock_configuration(Bucket=self.bucket).get("ObjectLockConfiguration", {})
        except s3_errors():
            conf = {}
        if conf.get("ObjectLockEnabled") == "Enabled":
            raise StorageError(f"{where}: it has Object Lock, so finished uploads could not be removed; "
                               "name a bucket without it (staging_bucket=...)")
        rule = {
            "ID": "bodycam-expire-abandoned-uploads",
            "Filter": {"Prefix": STAGING_PREFIX},
            "Status": "Enabled",
            "Expiration": {"Days": self._expiry_days},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
        }
        try:
            self._s3.put_bucket_lifecycle_configuration(Bucket=self.bucket, LifecycleConfiguration={"Rules": [rule]})
        except s3_errors() as exc:
            log.warning("%s: no lifecycle rule (%s): abandoned uploads stay until removed", where, describe(exc))

    def check(self) -> None:
        """Whether the staging bucket answers (``/readyz``); StorageError saying why not."""
        check_bucket(self._s3, self.bucket, "staging")

    @staticmethod
    def _check(upload_id: str) -> None:
        if not UPLOAD_ID.match(upload_id):
            raise StorageError(f"upload id {upload_id!r} is malformed")

    # -- UploadStore ------------------------------------------------------------------------

    def create(self, upload_id: str) -> None:
        """Nothing to write: an upload with no parts is empty."""
        self._check(upload_id)
        with self._guard:
            self._seen[upload_id] = _Seen()

    def size(self, upload_id: str) -> int:
        self._check(upload_id)
        with self._guard:
            seen = self._seen.get(upload_id, _Seen())
        end, run = contiguous(self._list(upload_id, seen.last_key), seen.end)
        if run:
            seen = _Seen(end, run[-1].key)
        with self._guard:
            self._seen[upload_id] = seen
        return seen.end

    def append(self, upload_id: str, offset: int, data: bytes) -> int:
        current = self.size(upload_id)
        if offset != current:
            raise StorageError(f"upload {upload_id}: offset {offset} is not the end of the upload ({current})")
        if not data:
            return current
        key = part_key(upload_id, offset)
        args: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": key,
            "Body": data,
            "ChecksumAlgorithm": "SHA256",
            "ChecksumSHA256": base64.b64encode(hashlib.sha256(data).digest()).decode("ascii"),
        }
        if self._conditional:
            args["IfNoneMatch"] = "*"
        try:
            self._s3.put_object(**args)
        except s3_errors() as exc:
            if error_code(exc) in _EXISTS:
                raise StorageError(f"upload {upload_id}: another node wrote offset {offset} first") from exc
            raise StorageError(f"writing upload {upload_id} at {offset} to s3://{self.bucket}/{key}: "
                               f"{describe(exc)}") from exc
        with self._guard:
            self._seen[upload_id] = _Seen(offset + len(data), key)
        return offset + len(data)

    def remove(self, upload_id: str) -> None:
        self._check(upload_id)
        with self._guard:
            self._seen.pop(upload_id, None)
        keys = [{"Key": p.key} for p in self._list(upload_id, "")]
        for i in range(0, len(keys), 1000):
            where = f"removing upload {upload_id} from s3://{self.bucket}"
            try:
                batch = {"Objects": keys[i : i + 1000], "Quiet": True}
                answer = self._s3.delete_objects(Bucket=self.bucket, Delete=batch)
            except s3_errors() as exc:
                raise StorageError(f"{where}: {describe(exc)}") from exc
            failed = answer.get("Errors") or []
            if failed:
                raise StorageError(f"{where}: {len(failed)} part(s) refused ({failed[0].get('Code', '?')})")

    @contextmanager
    def completed(self, upload_id: str) -> Iterator[Path | None]:
        """The contiguous parts spooled, in order, to a 0600 temporary file removed on exit; None
        when the upload has no parts (removed, or never written)."""
        self._check(upload_id)
        _, run = contiguous(self._list(upload_id, ""))
        if not run:
            yield None
            return
        fd, name = tempfile.mkstemp(prefix=f"{upload_id}.", suffix=".bcs", dir=self.spool_dir)
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                for part in run:
                    self._copy_part(upload_id, part, out)
            yield path
        finally:
            path.unlink(missing_ok=True)

    # -- reads ------------------------------------------------------------------------------

    def _copy_part(self, upload_id: str, part: Part, out: Any) -> None:
        try:
            answer = self._s3.get_object(Bucket=self.bucket, Key=part.key, ChecksumMode="ENABLED")
            with answer["Body"] as body:
                while block := body.read(1024 * 1024):
                    out.write(block)
        except s3_errors() as exc:
            raise StorageError(f"reading upload {upload_id} part at {part.offset}: {describe(exc)}") from exc

    def _list(self, upload_id: str, after: str) -> list[Part]:
        prefix = f"{STAGING_PREFIX}{upload_id}/"
        args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if after:
            args["StartAfter"] = after
        parts: list[Part] = []
        try:
            for page in self._s3.get_paginator("list_objects_v2").paginate(**args):
                for item in page.get("Contents", []):
                    part = parse_part(upload_id, str(item["Key"]), int(item["Size"]))
                    if part is not None:
                        parts.append(part)
        except s3_errors() as exc:
            raise StorageError(f"listing upload {upload_id} in s3://{self.bucket}: {describe(exc)}") from exc
        return parts
