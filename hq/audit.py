"""Writing audit records (CJIS 5.4.1): time, component, event type, actor, target and outcome."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from hq.index import Index
from hq.records import AuditRecord

log = logging.getLogger(__name__)


class Auditor:
    """Appends to the index's audit table on behalf of one component (``hq-api``, ``hq-cli``...).

    Thread-safe: the index serialises writes. An audit write that fails raises: an action that
    cannot be audited must not be reported as done.
    """

    def __init__(self, index: Index, component: str, now_ns: Callable[[], int]) -> None:
        self._index = index
        self._component = component
        self._now_ns = now_ns

    def record(self, event_type: str, actor: str, target: str, outcome: str, **detail: Any) -> None:
        self.add(event_type, actor, target, outcome, detail)

    def add(self, event_type: str, actor: str, target: str, outcome: str, detail: dict[str, Any]) -> None:
        """``record`` with the detail as one dict (its keys may be any names)."""
        self._index.audit(
            AuditRecord(
                utc_ns=self._now_ns(),
                component=self._component,
                event_type=event_type,
                actor=actor,
                target=target,
                outcome=outcome,
                detail=detail,
            )
        )
        log.info("audit %s %s actor=%s target=%s %s", self._component, event_type, actor, target, outcome)
