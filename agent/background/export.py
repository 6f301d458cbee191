"""A range of the background ring made evidence: on headquarters' signed ``background.upload``
request the ring's entries that overlap it are copied into the unit's chain (flagged
``background``, uploaded first like any priority entry), and the request is answered with what
was there and what was not (rotated out, never recorded).

The copy runs on the recorder thread, the chain's only writer (a recorder command registered by
``agent/running.py``); the request's handler, on the ``hq-requests`` thread, only asks for it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from agent.background.policy import cover
from agent.background.ring import BackgroundRing, RingError
from agent.chainlog import ChainLog
from agent.evidence.segment import SegmentError
from agent.store import RingEntry
from agent.sync.requests import HqRequest, Outcome

log = logging.getLogger(__name__)

COMMAND = "background_export"
EXPORT_TIMEOUT_S = 60.0  # a range of hours is some hundred MB copied on the recorder thread
MAX_RANGE_S = 24 * 3600


class RingExporter:
    """Copies ring entries into the chain. Runs on the recorder thread (``export`` is its command)."""

    def __init__(self, ring: BackgroundRing, chain: ChainLog) -> None:
        self._ring = ring
        self._chain = chain

    def export(self, actor: str, from_utc_ns: int, to_utc_ns: int, request_id: str) -> dict[str, Any]:
        found = cover(self._ring.entries(from_utc_ns, to_utc_ns), from_utc_ns, to_utc_ns)
        copied: list[int] = []
        kept: list[RingEntry] = []
        for entry in found.entries:
            try:
                ring = self._ring.manifest_of(entry)
                signed = self._chain.copy_in(self._ring.data_dir / entry.path, ring, {"request_id": request_id})
            except FileNotFoundError:
                continue  # rotated out between the listing and the copy: missing, like the rest
            except (RingError, SegmentError) as exc:
                log.error("background: ring entry %d not copied: %s", entry.seq, exc)
                continue
            copied.append(signed.seq)
            kept.append(entry)
        # what is missing is judged on what was copied, not on what was listed
        missing = cover(kept, from_utc_ns, to_utc_ns).missing
        return {"entries": copied, "ring_seqs": [e.seq for e in kept],
                "covered": [[e.utc_start_ns, e.utc_end_ns] for e in kept],
                "missing": [list(m) for m in missing], "by": actor}


def upload_handler(command: Callable[..., dict[str, Any]], kick: Callable[[], None]) -> Callable[[HqRequest], Outcome]:
    """The ``background.upload`` handler: ask the recorder to copy the range, wake the sync worker,
    and answer ``done`` (all of the range was there), ``partial`` (what was left: the detail says
    which parts are missing) or ``refused`` (parameters it will not take)."""

    def handle(request: HqRequest) -> Outcome:
        start, end = request.params.get("from_utc_ns"), request.params.get("to_utc_ns")
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end):
            return Outcome("refused", {"reason": "from_utc_ns and to_utc_ns: a range in ns, from before to"})
        if end - start > MAX_RANGE_S * 1_000_000_000:
            return Outcome("refused", {"reason": f"at most {MAX_RANGE_S // 3600} h per request"})
        answer = command(COMMAND, f"hq:{request.requested_by}", timeout_s=EXPORT_TIMEOUT_S, from_utc_ns=start,
                         to_utc_ns=end, request_id=request.request_id)
        kick()
        entries = answer["entries"]
        if not entries:
            note = "nothing of this range is on the unit (rotated out, or not recorded)"
        elif answer["missing"]:
            note = "what is left of this range; the rest rotated out or was not recorded"
        else:
            note = "the whole range"
        outcome = "done" if entries and not answer["missing"] else "partial"
        detail = {"entries": entries, "covered": answer["covered"], "missing": answer["missing"], "note": note}
        return Outcome(outcome, detail)

    return handle
