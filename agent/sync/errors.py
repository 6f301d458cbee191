"""What can go wrong talking to headquarters: one :class:`SyncError` per thing the sync worker
does differently (back off, alarm, stop uploading, defer the entry, create the upload again)."""

from __future__ import annotations


class SyncError(Exception):
    """A request to headquarters failed; the message says what was being done and why.

    ``status`` is the HTTP status when headquarters answered (None for network failures).
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TransientError(SyncError):
    """Worth retrying later with backoff: no connection, a timeout, a TLS failure or a 5xx."""


class ConfigurationError(SyncError):
    """The unit's sync settings are unusable (no https URL, an unreadable CA file)."""


class AuthError(SyncError):
    """401 or 403: the unit is not enrolled, revoked, or its clock is too far off for HQ."""


class RejectedError(SyncError):
    """422: headquarters says it verified the file, found it bad and quarantined it.

    Only ``notice_b64`` (the ``Bodycam-Quarantine`` header), once checked with the pinned receipt
    key, makes that true; ``code`` and ``detail`` come from the unsigned body.
    """

    def __init__(self, message: str, status: int, code: str, detail: str, notice_b64: str | None) -> None:
        super().__init__(message, status)
        self.code = code
        self.detail = detail
        self.notice_b64 = notice_b64


class ConflictError(SyncError):
    """409 on create: headquarters holds a different file for this seq."""


class GoneError(SyncError):
    """404 or 410: headquarters does not know this upload (expired or never created)."""


class OffsetMismatch(SyncError):
    """409 on append: the chunk did not start at headquarters' offset."""


class ChecksumMismatch(SyncError):
    """460: the chunk arrived altered; headquarters discarded it."""


class ProtocolError(SyncError):
    """An answer that breaks the protocol (a wrong offset, a missing header, another host)."""


class EntryFailed(Exception):
    """This entry cannot be uploaded now (its file is unreadable...): defer it, go on with others."""


class Stopped(Exception):
    """The worker was asked to stop in the middle of something."""
