"""The value types headquarters keeps in its index: devices, uploads, evidence, quarantine, audit."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# Device ids appear in paths and key ids: a conservative alphabet, no separators, no dot-files.
DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")

# receiving: bytes arriving; complete: every byte held, waiting for ingest; ingesting: claimed by
# one node's ingest worker; then stored or quarantined (final), terminated (by the unit) or expired
# (abandoned, its bytes removed by the expiry pass).
UPLOAD_STATES = ("receiving", "complete", "ingesting", "stored", "quarantined", "terminated", "expired")
OPEN_UPLOAD_STATES = ("receiving", "complete", "ingesting")
OUTCOMES = ("ok", "refused", "failed", "quarantined", "duplicate")


def valid_device_id(device_id: str) -> bool:
    return bool(DEVICE_ID.match(device_id))


@dataclass(frozen=True, slots=True)
class Device:
    device_id: str
    public_pem: str
    fingerprint: str
    enrolled_utc_ns: int
    revoked_utc_ns: int | None
    contiguous_through: int
    last_heartbeat_utc_ns: int | None
    last_status: dict[str, Any] | None

    @property
    def active(self) -> bool:
        return self.revoked_utc_ns is None


@dataclass(frozen=True, slots=True)
class Upload:
    """A tus upload. Its bytes live in the upload area while ``receiving``; ``result`` holds the
    final answer once ingested (``{"receipt": <b64>}`` or ``{"error": {...}}``)."""

    upload_id: str
    device_id: str
    seq: int
    filename: str
    sha256: str
    length: int
    state: str
    created_utc_ns: int
    updated_utc_ns: int
    result: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Evidence:
    """One chain entry held by headquarters, verified at ingest."""

    device_id: str
    seq: int
    kind: str
    manifest_sha256: str
    prev: str
    file_sha256: str
    size_bytes: int
    utc_start_ns: int
    utc_end_ns: int
    received_utc_ns: int
    status: str
    location: str
    upload_id: str
    warnings: tuple[str, ...] = ()
    receipt: bytes | None = None
    recording_id: str | None = None  # the manifest's (a segment) or its detail's (an event), if any
    marks: int = 0  # the officer's marks in a segment
    manifest: str | None = None  # the verified manifest, canonical JSON; None if held before 0005
    deleted_utc_ns: int | None = None  # when the lifecycle deleted its bytes (the row stays)


@dataclass(frozen=True, slots=True)
class Quarantined:
    quarantine_id: str
    device_id: str
    seq: int | None
    upload_id: str
    file_sha256: str
    code: str
    reason: str
    location: str
    received_utc_ns: int


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One CJIS 5.4.1 audit record: when, which component, what event, who, on what, outcome."""

    utc_ns: int
    component: str
    event_type: str
    actor: str
    target: str
    outcome: str
    detail: dict[str, Any]
    id: int | None = None
    prev_sha256: str | None = None  # the hash chain (hq.db.chain), set once stored
    sha256: str | None = None


VERIFICATION = ("verified", "warnings", "incomplete")


# The recording a copy from a unit's background ring belongs to (docs/evidence-format.md 8.9):
# the range headquarters asked for, ``background-<request id>``; the unit's manifests say null.
BACKGROUND_PREFIX = "background-"


@dataclass(frozen=True, slots=True)
class RecordingFilter:
    """What a search for recordings asks: each member None means "any". ``marked`` True finds
    recordings with at least one mark; ``status`` one of ``VERIFICATION``; ``background`` True the
    ranges headquarters asked of units' background rings (recording ids ``BACKGROUND_PREFIX``...)."""

    device_id: str | None = None
    from_ns: int | None = None
    to_ns: int | None = None
    recording_id: str | None = None
    marked: bool | None = None
    status: str | None = None
    limit: int = 25
    offset: int = 0
    background: bool | None = None  # True: ranges copied from a unit's background ring; False: the others


@dataclass(frozen=True, slots=True)
class RecordingSummary:
    """One recording (a unit's segments that share a recording id) as a search finds it.

    ``status``: ``incomplete`` when entries up to its last segment are missing at headquarters
    (the device's contiguous run ends before it), else ``warnings`` when a segment was verified
    with warnings, else ``verified``."""

    device_id: str
    recording_id: str
    utc_start_ns: int
    utc_end_ns: int
    segments: int
    first_seq: int
    last_seq: int
    marks: int
    size_bytes: int
    status: str


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """A search of the audit log, newest first. ``target`` matches an object id or its prefix
    (``device:U1`` finds ``device:U1`` and ``device:U1/7``); ``before_id`` pages backwards."""

    actor: str | None = None
    target: str | None = None
    event_type: str | None = None
    from_ns: int | None = None
    to_ns: int | None = None
    before_id: int | None = None
    limit: int = 200


# queued: waiting for the unit's poll; delivered: handed to a poll (handed out again if no result
# comes within the redelivery time); answered: the unit's signed result is held (final).
REQUEST_STATES = ("queued", "delivered", "answered")


@dataclass(frozen=True, slots=True)
class UnitRequest:
    """A request headquarters signed for one unit (``signed``: the exact bytes the unit gets),
    and the unit's signed result once it came (``result``, with its ``outcome``)."""

    request_id: str
    device_id: str
    kind: str
    params: dict[str, Any]
    requested_by: str
    issued_utc_ns: int
    expires_utc_ns: int
    signed: bytes
    state: str = "queued"
    delivered_utc_ns: int | None = None
    deliveries: int = 0
    outcome: str | None = None
    result: bytes | None = None
    answered_utc_ns: int | None = None
