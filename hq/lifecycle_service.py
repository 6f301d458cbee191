"""The evidence lifecycle as a service that knows no HTTP: the actions a supervisor takes
(categories, cases, deletion requests, restores), each audited and written to the custody
ledger, and the periodic pass (part of headquarters' maintenance) that applies legal holds in the
store, queues recordings past their retention and deletes those whose queue time is over, after
checking the hold and the lock at both layers: the index (``hq.lifecycle_index``) and the store
(``EvidenceStore.protection``; the store refuses on its own too).

The decisions are ``hq.lifecycle``'s pure functions; this module only reads, asks and writes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hq.audit import Auditor
from hq.custody import ANCHOR_INTERVAL_S, AnchorError, CustodyAnchors
from hq.db import HqIndexError
from hq.lifecycle import (
    CASE_ID,
    CATEGORY_NAME,
    DELETION_QUEUE_S,
    NS_PER_S,
    RECORDING_ID,
    ROLES,
    Category,
    LifecycleError,
    Recording,
    check_name,
    deletion_refusal,
    describe_retention,
    hold_to_apply,
    queue_due,
)
from hq.lifecycle_index import Case, LifecycleIndex
from hq.records import AuditRecord, valid_device_id
from hq.storage import EvidenceStore, StorageError

log = logging.getLogger(__name__)

RETENTION_ACTOR = "retention"  # who queues a recording whose retention ended


@dataclass(frozen=True, slots=True)
class LifecycleLimits:
    """How much one periodic pass does at most (each kind), and how long the deletion queue waits."""

    batch: int = 100
    queue_s: int = DELETION_QUEUE_S
    anchor_interval_s: int = ANCHOR_INTERVAL_S


def _recording_key(device_id: str, recording_id: str) -> str:
    if not valid_device_id(device_id):
        raise LifecycleError(f"device id {device_id!r} is not a valid unit id")
    check_name(RECORDING_ID, recording_id, "recording id")
    return f"{device_id}/{recording_id}"


class LifecycleService:
    """Thread-safe as its index and store are; no state of its own."""

    def __init__(self, lifecycle: LifecycleIndex, store: EvidenceStore, audit: Auditor,
                 now_ns: Callable[[], int], component: str = "hq-lifecycle",
                 limits: LifecycleLimits | None = None, exports_dir: Path | None = None,
                 keys_dir: Path | None = None) -> None:
        self.index = lifecycle
        self._store = store
        self.store = store
        self.exports_dir = exports_dir  # where the operations room writes court exports
        self.keys_dir = keys_dir  # where its C2PA export key and chain are (hq/credentials.py)
        self._audit = audit
        self._now_ns = now_ns
        self._component = component
        self.limits = limits or LifecycleLimits()
        self.anchors = CustodyAnchors(lifecycle, store, now_ns, self.limits.anchor_interval_s)

    def ledger(self, event: str, actor: str, target: str, outcome: str = "ok", **detail: Any) -> None:
        """One custody record (and the same as an audit record: CJIS asks every action audited)."""
        self.custody(event, actor, target, outcome, **detail)
        self._audit.record(event, actor, target, outcome, **detail)

    def custody(self, event: str, actor: str, target: str, outcome: str = "ok", **detail: Any) -> None:
        """One custody record alone, for what is audited elsewhere already (ingest, receipts,
        exports, playback): ``target`` is ``device/recording``, ``detail`` names the entries."""
        self.index.custody(AuditRecord(self._now_ns(), self._component, event, actor, target, outcome, detail))

    # -- categories -------------------------------------------------------------------------

    def set_category(self, actor: str, name: str, retention_s: int | None, role: str | None = None,
                     doc: str = "") -> bool:
        check_name(CATEGORY_NAME, name, "category")
        if role is not None and role not in ROLES:
            raise LifecycleError(f"role {role!r}: give one of {', '.join(ROLES)}")
        new = self.index.set_category(Category(name, retention_s, role, doc), self._now_ns())
        self._audit.record("category-set", actor, name, "ok", retention=describe_retention(retention_s),
                           role=role, new=new)
        return new

    def assign(self, actor: str, device_id: str, recording_id: str, category: str) -> bool:
        target = _recording_key(device_id, recording_id)
        added = self.index.assign(device_id, recording_id, category, actor, self._now_ns())
        self.ledger("category-assign", actor, target, category=category, changed=added)
        return added

    def unassign(self, actor: str, device_id: str, recording_id: str, category: str) -> bool:
        target = _recording_key(device_id, recording_id)
        removed = self.index.unassign(device_id, recording_id, category)
        self.ledger("category-remove", actor, target, category=category, changed=removed)
        return removed

    # -- cases and legal hold -----------------------------------------------------------------

    def open_case(self, actor: str, case_id: str, title: str) -> Case:
        check_name(CASE_ID, case_id, "case id")
        case = Case(case_id, title, "open", actor, self._now_ns())
        self.index.open_case(case)
        self._audit.record("case-open", actor, case_id, "ok", title=title)
        return case

    def add_to_case(self, actor: str, case_id: str, device_id: str, recording_id: str) -> bool:
        target = _recording_key(device_id, recording_id)
        added = self.index.add_to_case(case_id, device_id, recording_id, actor, self._now_ns())
        self.ledger("hold", actor, target, case_id=case_id, changed=added)
        self._apply_hold_now(device_id, recording_id)
        return added

    def remove_from_case(self, actor: str, case_id: str, device_id: str, recording_id: str) -> bool:
        target = _recording_key(device_id, recording_id)
        removed = self.index.remove_from_case(case_id, device_id, recording_id)
        self.ledger("release", actor, target, case_id=case_id, changed=removed)
        self._apply_hold_now(device_id, recording_id)
        return removed

    def close_case(self, actor: str, case_id: str) -> bool:
        held = self.index.recordings(case_id=case_id)
        closed = self.index.close_case(case_id, actor, self._now_ns())
        if not closed:
            raise LifecycleError(f"case {case_id!r} is not open")
        self._audit.record("case-close", actor, case_id, "ok", recordings=len(held))
        for rec in held:
            self.ledger("release", actor, rec.key, case_id=case_id, reason="case closed")
            self._apply_hold_now(rec.device_id, rec.recording_id)
        return closed

    def _apply_hold_now(self, device_id: str, recording_id: str) -> None:
        rec = self.index.recording(device_id, recording_id)
        if rec is None:
            return
        try:
            self._apply_hold(rec)
        except (StorageError, HqIndexError) as exc:  # the periodic pass tries again
            log.warning("legal hold of %s not yet set in the store (the next pass retries): %s", rec.key, exc)

    def _apply_hold(self, rec: Recording) -> bool:
        want = hold_to_apply(rec)
        if want is None:
            return False
        for entry in self.index.entries(rec.device_id, rec.recording_id):
            self._store.set_hold(entry.device_id, entry.seq, want, entry.location)
        self.index.set_hold_applied(rec.device_id, rec.recording_id, want)
        self._audit.record("store-hold", self._component, rec.key, "ok", legal_hold=want)
        return True

    # -- the deletion queue ---------------------------------------------------------------------

    def request_deletion(self, actor: str, device_id: str, recording_id: str, reason: str) -> None:
        """Put a recording in the deletion queue by hand (it goes after the queue's wait unless restored)."""
        target = _recording_key(device_id, recording_id)
        rec = self.index.recording(device_id, recording_id)
        if rec is None:
            raise LifecycleError(f"headquarters holds no recording {target}")
        if rec.held:
            self.ledger("deletion-request", actor, target, "refused", reason="on legal hold")
            raise LifecycleError(f"{target} is on legal hold (an open case holds it): it cannot be deleted")
        if not self.index.queue(device_id, recording_id, actor, reason, self._now_ns()):
            raise LifecycleError(f"{target} is {rec.state}, not kept: nothing to queue")
        self.ledger("deletion-request", actor, target, reason=reason)

    def restore(self, actor: str, device_id: str, recording_id: str) -> None:
        target = _recording_key(device_id, recording_id)
        if not self.index.restore(device_id, recording_id):
            rec = self.index.recording(device_id, recording_id)
            state = "not held by headquarters" if rec is None else rec.state
            raise LifecycleError(f"{target} is {state}: only a recording in the deletion queue can be restored")
        self.ledger("restore", actor, target)

    # -- the periodic pass ------------------------------------------------------------------------

    def run_pass(self) -> dict[str, int]:
        """One bounded pass: holds set or released in the store, recordings past retention
        queued, queued ones whose wait is over deleted, the custody ledger's head anchored in the
        store when it moved and the anchor interval has passed. Each step catches, logs and goes on."""
        counts = {"holds_applied": 0, "queued": 0, "deleted": 0, "refused": 0, "failed": 0, "anchored": 0}
        for rec in self.index.holds_to_apply(self.limits.batch):
            try:
                counts["holds_applied"] += self._apply_hold(rec)
            except (StorageError, HqIndexError) as exc:
                counts["failed"] += 1
                log.warning("lifecycle: legal hold of %s: %s", rec.key, exc)
        now = self._now_ns()
        known = self.index.categories()
        for rec in self.index.due_for_queue(now, self.limits.batch):
            if queue_due(rec, known, now) and self.index.queue(rec.device_id, rec.recording_id, RETENTION_ACTOR,
                                                               "retention ended", now):
                self.ledger("deletion-request", RETENTION_ACTOR, rec.key, reason="retention ended",
                            categories=list(rec.categories))
                counts["queued"] += 1
        for rec in self.index.due_for_deletion(now - self.limits.queue_s * NS_PER_S, self.limits.batch):
            outcome = self._delete(rec, now)
            counts[outcome] += 1
        try:
            counts["anchored"] = int(self.anchors.anchor_if_due() is not None)
        except (StorageError, HqIndexError, AnchorError) as exc:
            counts["failed"] += 1
            log.warning("lifecycle: anchoring the custody ledger: %s (the next pass tries again)", exc)
        return counts

    def _delete(self, rec: Recording, now: int) -> str:
        """Delete one due recording, or say why not; 'deleted', 'refused' or 'failed'."""
        try:
            fresh = self.index.recording(rec.device_id, rec.recording_id)
            if fresh is None:
                return "failed"
            entries = self.index.entries(rec.device_id, rec.recording_id)
            protections = [self._store.protection(e.device_id, e.seq, e.location) for e in entries]
            refusal = deletion_refusal(fresh.held, protections, now)
            if refusal is not None:
                log.info("lifecycle: %s stays in the queue: %s", rec.key, refusal)
                return "refused"
            if fresh.state == "queued" and not self.index.begin_deletion(rec.device_id, rec.recording_id):
                return "refused"
            for e in entries:
                self._store.delete(e.device_id, e.seq, e.location)
                self.index.mark_entry_deleted(e.device_id, e.seq, self._now_ns())
            self.index.finish_deletion(rec.device_id, rec.recording_id, self._now_ns())
        except (StorageError, HqIndexError) as exc:
            log.warning("lifecycle: deleting %s: %s (the next pass tries again)", rec.key, exc)
            return "failed"
        self.ledger("delete", RETENTION_ACTOR if rec.queued_by == RETENTION_ACTOR else "lifecycle", rec.key,
                    seqs=[e.seq for e in entries], queued_by=rec.queued_by, reason=rec.queue_reason)
        return "deleted"
