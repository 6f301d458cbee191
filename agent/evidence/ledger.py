"""The record hash of headquarters' hash-chained logs (the audit log, the custody ledger), here so
that ``bodycam verify`` checks a court export's custody extract offline with the same code that
headquarters chains with (``hq/db/chain.py``). Pure: no I/O."""

from __future__ import annotations

import hashlib
import json

GENESIS = "0" * 64
AUDIT_DOMAIN = b"bodycam-audit-v1\n"
CUSTODY_DOMAIN = b"bodycam-custody-v1\n"


def record_hash(prev_sha256: str, utc_ns: int, component: str, event_type: str, actor: str, target: str,
                outcome: str, detail: str, domain: bytes = AUDIT_DOMAIN) -> str:
    """SHA-256 (hex) of the domain tag and a JSON array of prev and the fields: compact, UTF-8,
    one encoding whatever the engine (integers and strings only). ``detail`` is the stored JSON
    text, hashed as it is."""
    fields = [prev_sha256, utc_ns, component, event_type, actor, target, outcome, detail]
    encoded = json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(domain + encoded).hexdigest()
