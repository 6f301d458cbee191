"""The likely cause behind an error text a person reads, and what to do about it. Pure.

The sync client reports what failed in its own words (the TLS library's, the receipt check's);
``bodycam ctl status``, ``bodycam diag`` and the console add the cause a technician can act on.
"""

from __future__ import annotations

# (text found in the error, the likely cause and what to do): first match wins
_SYNC_HINTS = (
    ("unable to get local issuer certificate",
     "the unit's hq-ca.pem is not the CA of this headquarters: provision the unit again with "
     "headquarters' keys/ca.pem (bodycam provision --hq-ca)"),
    ("self-signed certificate",
     "the unit's hq-ca.pem is not the CA of this headquarters: provision the unit again with "
     "headquarters' keys/ca.pem (bodycam provision --hq-ca)"),
    ("hostname mismatch",
     "headquarters' server certificate does not name the host in hq.url: make one that does "
     "(bodycam-hq keygen --san HOST) or use a name it holds"),
    ("certificate has expired",
     "headquarters' server certificate, or the unit's clock, is out of date"),
    ("receipt signature does not verify",
     "the unit's hq.pub is not this headquarters' (its receipts are signed with another key): "
     "provision the unit again with headquarters' keys/hq.pub"),
    ("connection refused",
     "nothing listens at hq.url: is bodycam-hq serve running, on that host and port?"),
)


def sync_hint(message: object) -> str | None:
    """The likely cause of a sync error text, or None when there is no better guess than the text."""
    text = str(message or "").lower()
    for needle, hint in _SYNC_HINTS:
        if needle in text:
            return hint
    return None


def with_sync_hint(message: object) -> str:
    """The error text followed by its likely cause, when one is known."""
    hint = sync_hint(message)
    return f"{message}" if hint is None else f"{message} (likely cause: {hint})"
