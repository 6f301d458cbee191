"""The hash chains of the audit log and the custody ledger: each record's ``sha256`` covers a
canonical encoding of its fields and the previous record's ``sha256`` (``prev_sha256``), under a
domain tag of its own per log. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from agent.evidence.ledger import AUDIT_DOMAIN, CUSTODY_DOMAIN, GENESIS, record_hash
from agent.humanize import plural

__all__ = ["AUDIT_DOMAIN", "CUSTODY_DOMAIN", "GENESIS", "ChainReport", "ChainRow", "ChainWalker", "record_hash",
           "row_hash"]


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


def row_hash(row: ChainRow, domain: bytes = AUDIT_DOMAIN) -> str:
    return record_hash(row.prev_sha256, row.utc_ns, row.component, row.event_type, row.actor, row.target,
                       row.outcome, row.detail, domain)


@dataclass(frozen=True, slots=True)
class ChainReport:
    """What walking the chain found: how many records were checked, and the first broken link."""

    records: int
    head_sha256: str
    broken_id: int | None = None
    problem: str | None = None
    what: str = "audit record"

    @property
    def intact(self) -> bool:
        return self.broken_id is None

    def summary(self) -> str:
        if self.intact:
            return f"{plural(self.records, 'record')}, chain intact, head {self.head_sha256}"
        return (f"{self.what} {self.broken_id}: {self.problem} "
                f"(the chain breaks there; {plural(self.records, 'record')} before it intact)")


class ChainWalker:
    """Feeds rows in id order (in batches, so the whole log never sits in memory) and stops at
    the first broken link: a record whose stored hash is not its fields', or whose ``prev_sha256``
    is not the previous record's hash (a record changed, inserted or deleted in the middle)."""

    def __init__(self, domain: bytes = AUDIT_DOMAIN, what: str = "audit record") -> None:
        self.domain = domain
        self.what = what
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
            elif row_hash(row, self.domain) != row.sha256:
                self._break(row, "its fields do not hash to its stored sha256 (the record was changed)")
            else:
                self.records += 1
                self.head = row.sha256
        return self.broken is None

    def _break(self, row: ChainRow, problem: str) -> None:
        self.broken = ChainReport(self.records, self.head, row.id, problem, self.what)

    def report(self) -> ChainReport:
        return self.broken or ChainReport(self.records, self.head, what=self.what)
