"""The custody ledger's anchors: its head, kept now and then as a record in the evidence store
(an object under Object Lock in the bucket; a read-only file in the embedded store), so that rows
cut from the end of the ledger, or the whole ledger rewritten, show against a copy headquarters'
database cannot change.

``anchor_due`` and ``check_anchors`` are pure; ``CustodyAnchors`` reads the ledger's head, writes
anchors and checks the ledger against them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from hq.db.chain import ChainReport
from hq.lifecycle import NS_PER_S
from hq.storage import EvidenceStore, StorageError

log = logging.getLogger(__name__)

ANCHOR_PREFIX = "custody/anchors/"
ANCHOR_INTERVAL_S = 3600  # an hour of custody records at most rests on the database alone


class LedgerHead(Protocol):
    """What anchoring needs of the ledger (``hq.lifecycle_index.SqlLifecycle`` has it)."""

    def custody_head(self) -> tuple[int, str] | None: ...
    def custody_hash(self, record_id: int) -> str | None: ...
    def verify_custody(self, batch_rows: int = 1000) -> ChainReport: ...


class AnchorError(Exception):
    """An anchor that cannot be read; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Anchor:
    """The ledger's head at one time: the id and hash of its last record."""

    utc_ns: int
    last_id: int
    head_sha256: str

    @property
    def name(self) -> str:
        return f"{ANCHOR_PREFIX}{self.utc_ns:020d}.json"

    def encode(self) -> bytes:
        doc = {"format": "bodycam-custody-anchor-v1", "utc_ns": self.utc_ns, "last_id": self.last_id,
               "head_sha256": self.head_sha256}
        return json.dumps(doc, sort_keys=True).encode("ascii") + b"\n"

    @classmethod
    def decode(cls, name: str, data: bytes) -> Anchor:
        try:
            doc = json.loads(data)
            if doc.get("format") != "bodycam-custody-anchor-v1":
                raise ValueError("not a custody anchor")
            anchor = cls(int(doc["utc_ns"]), int(doc["last_id"]), str(doc["head_sha256"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise AnchorError(f"anchor {name}: unreadable ({exc})") from exc
        return anchor


def anchor_due(last: Anchor | None, head: tuple[int, str] | None, now_ns: int,
               interval_s: int = ANCHOR_INTERVAL_S) -> bool:
    """Whether to anchor now: the ledger has records, its head moved since the last anchor, and
    the interval has passed."""
    if head is None:
        return False
    if last is None:
        return True
    return head != (last.last_id, last.head_sha256) and now_ns - last.utc_ns >= interval_s * NS_PER_S


def check_anchors(report: ChainReport, anchors: Sequence[Anchor], hash_at: Callable[[int], str | None]) -> list[str]:
    """What the anchors show against an intact walk of the ledger: each anchored record must
    still be there with the hash it had (else rows were cut from the end, or the ledger was
    rewritten). ``hash_at(id)`` is the stored hash of record ``id``, or None."""
    problems: list[str] = []
    for anchor in anchors:
        found = hash_at(anchor.last_id)
        if found is None:
            problems.append(f"custody record {anchor.last_id}, anchored at utc_ns {anchor.utc_ns}, is gone: "
                            "records were cut from the end of the ledger")
        elif found != anchor.head_sha256:
            problems.append(f"custody record {anchor.last_id} hashes to {found[:16]}..., not the anchored "
                            f"{anchor.head_sha256[:16]}...: the ledger was rewritten")
    return problems


class CustodyAnchors:
    """Writes anchors of the ledger ``ledger`` keeps into ``store`` and checks the ledger against
    them. Thread contract: one periodic pass calls ``anchor_if_due``; ``verify`` may run anywhere."""

    def __init__(self, ledger: LedgerHead, store: EvidenceStore, now_ns: Callable[[], int],
                 interval_s: int = ANCHOR_INTERVAL_S) -> None:
        self._ledger = ledger
        self._store = store
        self._now_ns = now_ns
        self.interval_s = interval_s
        self._last: Anchor | None = None

    def anchors(self) -> list[Anchor]:
        found = []
        for name in self._store.list_records(ANCHOR_PREFIX):
            data = self._store.get_record(name)
            if data is not None:
                found.append(Anchor.decode(name, data))
        return sorted(found, key=lambda a: a.utc_ns)

    def newest(self) -> Anchor | None:
        names = self._store.list_records(ANCHOR_PREFIX)  # named by time: the last is the newest
        data = self._store.get_record(names[-1]) if names else None
        return None if data is None else Anchor.decode(names[-1], data)

    def anchor_if_due(self) -> Anchor | None:
        """Anchor the ledger's head if ``anchor_due``; the anchor written, or None."""
        if self._last is None:
            self._last = self.newest()
        now, head = self._now_ns(), self._ledger.custody_head()
        if head is None or not anchor_due(self._last, head, now, self.interval_s):
            return None
        anchor = Anchor(now, head[0], head[1])
        self._store.put_record(anchor.name, anchor.encode())
        self._last = anchor
        return anchor

    def verify(self) -> tuple[ChainReport, list[str], int]:
        """The ledger's walk, what its anchors show, and how many anchors were checked."""
        report = self._ledger.verify_custody()
        try:
            anchors = self.anchors()
        except (AnchorError, StorageError) as exc:
            return report, [str(exc)], 0
        return report, check_anchors(report, anchors, self._ledger.custody_hash), len(anchors)
