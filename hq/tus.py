"""tus 1.0 (core, creation, checksum, termination, expiration): header parsing and the limits, pure.

The state of each upload lives in the index and its bytes in the upload area; ``hq.service``
applies these rules to them.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import email.utils
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass

from hq.errors import ApiError
from hq.records import valid_device_id

TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = "creation,checksum,termination,expiration"
CHECKSUM_ALGORITHMS = "sha1,sha256"  # the checksum extension requires sha1
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"
MAX_CHUNK_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_SIZE = 4 * 1024 * 1024 * 1024
STATUS_CHECKSUM_MISMATCH = 460
MAX_INT63 = 2**63 - 1  # every number from outside fits a signed 64-bit column
MAX_SEQ = 2**40 - 1  # a unit writing an entry a second would take 34,000 years to reach it


def _sha1(body: bytes) -> bytes:
    return hashlib.sha1(body, usedforsecurity=False).digest()  # tus checks integrity, not authenticity


def _sha256(body: bytes) -> bytes:
    return hashlib.sha256(body).digest()


_DIGESTS = {"sha1": (20, _sha1), "sha256": (32, _sha256)}

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_FILENAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_INT = re.compile(r"^[0-9]{1,40}$")


@dataclass(frozen=True, slots=True)
class UploadMeta:
    """What ``Upload-Metadata`` announces: whose entry, which seq, its name and whole-file SHA-256."""

    device_id: str
    seq: int
    filename: str
    sha256: str


def header(headers: Mapping[str, str], name: str) -> str | None:
    name = name.lower()
    for k, v in headers.items():
        if k.lower() == name:
            return v.strip()
    return None


def parse_uint(value: str | None, name: str, maximum: int = MAX_INT63) -> int:
    """A decimal header value from 0 to ``maximum``; 400 if absent, malformed or out of range."""
    if value is None:
        raise ApiError(400, "missing-header", f"{name} is required")
    if not _INT.match(value):
        raise ApiError(400, "bad-header", f"{name} must be a non-negative integer")
    number = int(value)
    if number > maximum:
        raise ApiError(400, "out-of-range", f"{name} must be at most {maximum}")
    return number


def _b64(value: str, key: str) -> str:
    try:
        return base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, ValueError) as exc:
        raise ApiError(400, "bad-metadata", f"Upload-Metadata {key}: not base64 of UTF-8 text") from exc


def parse_metadata(value: str | None) -> UploadMeta:
    """Parse ``Upload-Metadata``: ``key b64,key b64``; device_id, seq, filename and sha256 are required."""
    if value is None:
        raise ApiError(400, "missing-header", "Upload-Metadata is required (device_id, seq, filename, sha256)")
    pairs: dict[str, str] = {}
    for item in value.split(","):
        parts = item.strip().split(" ")
        if not parts[0] or not _KEY.match(parts[0]) or len(parts) > 2 or parts[0] in pairs:
            raise ApiError(400, "bad-metadata", "Upload-Metadata must be unique 'key base64' pairs")
        pairs[parts[0]] = _b64(parts[1], parts[0]) if len(parts) == 2 else ""
    missing = [k for k in ("device_id", "seq", "filename", "sha256") if k not in pairs]
    if missing:
        raise ApiError(400, "bad-metadata", f"Upload-Metadata lacks {', '.join(missing)}")
    if not valid_device_id(pairs["device_id"]):
        raise ApiError(400, "bad-metadata", "Upload-Metadata device_id is not a valid device id")
    if not _INT.match(pairs["seq"]):
        raise ApiError(400, "bad-metadata", "Upload-Metadata seq must be a non-negative integer")
    if int(pairs["seq"]) > MAX_SEQ:
        raise ApiError(400, "out-of-range", f"Upload-Metadata seq must be at most {MAX_SEQ}")
    if not _FILENAME.match(pairs["filename"]):
        raise ApiError(400, "bad-metadata", "Upload-Metadata filename must be a plain file name")
    if not _HEX64.match(pairs["sha256"]):
        raise ApiError(400, "bad-metadata", "Upload-Metadata sha256 must be 64 lowercase hex digits")
    return UploadMeta(pairs["device_id"], int(pairs["seq"]), pairs["filename"], pairs["sha256"])


def encode_metadata(meta: UploadMeta) -> str:
    """The ``Upload-Metadata`` value announcing ``meta`` (what a unit sends)."""
    items = (
        ("device_id", meta.device_id),
        ("seq", str(meta.seq)),
        ("filename", meta.filename),
        ("sha256", meta.sha256),
    )
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode('ascii')}" for k, v in items)


@dataclass(frozen=True, slots=True)
class Checksum:
    """An ``Upload-Checksum``: the algorithm (one of ``CHECKSUM_ALGORITHMS``) and the digest."""

    algorithm: str
    digest: bytes

    def matches(self, body: bytes) -> bool:
        return hmac.compare_digest(_DIGESTS[self.algorithm][1](body), self.digest)


def parse_checksum(value: str) -> Checksum:
    """``Upload-Checksum: <algorithm> <base64>``; 400 for another algorithm, bad base64 or a
    digest of the wrong size."""
    parts = value.split(" ")
    if len(parts) != 2 or parts[0] not in _DIGESTS:
        raise ApiError(400, "bad-checksum",
                       f"Upload-Checksum must be '<algorithm> <base64>' with one of {CHECKSUM_ALGORITHMS}")
    try:
        digest = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiError(400, "bad-checksum", "Upload-Checksum digest is not base64") from exc
    size = _DIGESTS[parts[0]][0]
    if len(digest) != size:
        raise ApiError(400, "bad-checksum", f"Upload-Checksum {parts[0]} digest is not {size} bytes")
    return Checksum(parts[0], digest)


def expires_header(expires_utc_ns: int) -> dict[str, str]:
    """``Upload-Expires`` (tus expiration): when an unfinished upload is removed, as an HTTP date."""
    when = datetime.datetime.fromtimestamp(expires_utc_ns // 1_000_000_000, tz=datetime.UTC)
    return {"Upload-Expires": email.utils.format_datetime(when, usegmt=True)}


def options_headers(max_size: int) -> dict[str, str]:
    return {
        "Tus-Resumable": TUS_VERSION,
        "Tus-Version": TUS_VERSION,
        "Tus-Extension": TUS_EXTENSIONS,
        "Tus-Checksum-Algorithm": CHECKSUM_ALGORITHMS,
        "Tus-Max-Size": str(max_size),
    }


def check_resumable(headers: Mapping[str, str]) -> None:
    """412 unless the request speaks tus 1.0.0."""
    if header(headers, "tus-resumable") != TUS_VERSION:
        raise ApiError(412, "tus-version", f"Tus-Resumable: {TUS_VERSION} is required", {"Tus-Version": TUS_VERSION})
