"""The audit log's hash chain: each record's ``sha256`` covers a canonical encoding of its fields
and the previous record's ``sha256`` (``prev_sha256``). Pure: no I/O."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass

from agent.humanize import plural

GENESIS = "0" * 64
_DOMAIN = b"bodycam-audit-v1\n"


@dataclass(frozen=True, slots=True)
class ChainRow:
    """One audit row as stored: ``detail`` is the stored JSON text, hashed as it is."""

    id: int
    utc_ns: int
    component: str
    event_type: str
    actor: str
    target: str
    outcome: str
    detail: str
    prev_sha256: str
    sha256: str


def record_hash(prev_sha256: str, utc_ns: int, component: str, event_type: str, actor: str, target: str,
                outcome: str, detail: str) -> str:
    """SHA-256 (hex) of the domain tag and a JSON array of prev and the fields: compact, UTF-8,
    one encoding whatever the engine (integers and strings only)."""
    fields = [prev_sha256, utc_ns, component, event_type, actor, target, outcome, detail]
    encoded = json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(_DOMAIN + encoded).hexdigest()


def row_hash(row: ChainRow) -> str:
    return record_hash(row.prev_sha256, row.utc_ns, row.component, row.event_type, row.actor, row.target,
                       row.outcome, row.detail)


@dataclass(frozen=True, slots=True)
class ChainReport:
    """What walking the chain found: how many records were checked, and the first broken link."""

    records: int
    head_sha256: str
    broken_id: int | None = None
    problem: str | None = None

    @property
    def intact(self) -> bool:
        return self.broken_id is None

    def summary(self) -> str:
        if self.intact:
            return f"{plural(self.records, 'record')}, chain intact, head {self.head_sha256}"
        return (f"audit record {self.broken_id}: {self.problem} "
                f"(the chain breaks there; {plural(self.records, 'record')} before it intact)")


class ChainWalker:
    """Feeds rows in id order (in batches, so the whole log never sits in memory) and stops at
    the first broken link: a record whose stored hash is not its fields', or whose ``prev_sha256``
    is not the previous record's hash (a record changed, inserted or deleted in the middle)."""

    def __init__(self) -> None:
        self.records = 0
        self.head = GENESIS
        self.broken: ChainReport | None = None

    def feed(self, rows: Iterable[ChainRow]) -> bool:
        """False once broken (stop feeding)."""
        for row in rows:
            if self.broken is not None:
                return False
            if row.prev_sha256 != self.head:
                self._break(row, f"prev_sha256 {row.prev_sha256[:16]}... is not the previous record's hash "
                            f"{self.head[:16]}... (a record before it was changed, removed or inserted)")
            elif row_hash(row) != row.sha256:
                self._break(row, "its fields do not hash to its stored sha256 (the record was changed)")
            else:
                self.records += 1
                self.head = row.sha256
        return self.broken is None

    def _break(self, row: ChainRow, problem: str) -> None:
        self.broken = ChainReport(self.records, self.head, row.id, problem)

    def report(self) -> ChainReport:
        return self.broken or ChainReport(self.records, self.head)
