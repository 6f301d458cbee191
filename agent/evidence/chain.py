"""Chain verification over parsed manifests: pure, no I/O.

Given every entry found (any order, possibly with duplicates or strays), say whether they
form one unbroken, untampered, gap-free chain of one device, and name each defect.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from agent.evidence.format import BACKGROUND_FLAG, GENESIS_PREV, segment_filename

# Events that explain a hole in footage: the unit says why it did not record.
GAP_EXPLAINING_EVENTS = frozenset(
    {"sensor-fault", "storage-full", "storage-error", "recovered-after-power-loss", "clock-step", "shutdown", "boot"}
)


@dataclass(frozen=True, slots=True)
class Entry:
    """One chain entry as read from a file: the file's name, its manifest and its chain hash."""

    name: str
    manifest: dict[str, Any]
    hash: str

    @property
    def seq(self) -> int:
        return int(self.manifest["seq"])

    @property
    def kind(self) -> str:
        return str(self.manifest["type"])

    @property
    def event(self) -> str | None:
        return self.manifest.get("event")


@dataclass(frozen=True, slots=True)
class Finding:
    name: str
    seq: int | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.name, "seq": self.seq, "reason": self.reason}


@dataclass
class ChainReport:
    problems: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    ordered: list[Entry] = field(default_factory=list)
    device_id: str | None = None
    clean_end: bool = False


def _fmt_s(ns: int) -> str:
    return f"{ns / 1e9:.3f} s"


def verify_chain(entries: list[Entry], expected_device_id: str | None = None) -> ChainReport:
    """Check order, linkage, completeness and footage continuity of ``entries``."""
    report = ChainReport()
    if not entries:
        report.problems.append(Finding("-", None, "no evidence entries found"))
        return report
    device = expected_device_id or _majority_device(entries)
    report.device_id = device

    by_seq: dict[int, list[Entry]] = defaultdict(list)
    for e in entries:
        if e.manifest["device_id"] != device:
            report.problems.append(
                Finding(e.name, e.seq, f"belongs to device {e.manifest['device_id']!r}, not {device!r}")
            )
            continue
        by_seq[e.seq].append(e)

    ordered: list[Entry] = []
    for seq in sorted(by_seq):
        # The file named after its seq is kept; other names in code point order (a copy named
        # "0000000003-copy.bcs" sorts before "0000000003.bcs" but is the one reported).
        group = sorted(by_seq[seq], key=lambda e: (e.name != segment_filename(e.seq), e.name))
        first = group[0]
        for other in group[1:]:
            if other.hash == first.hash:
                report.problems.append(Finding(other.name, seq, f"duplicate of {first.name} (same entry twice)"))
            else:
                report.problems.append(
                    Finding(
                        other.name,
                        seq,
                        f"conflicts with {first.name}: two different entries claim seq {seq} "
                        "(one is forged, replayed or from another chain)",
                    )
                )
        ordered.append(first)
    report.ordered = ordered
    if not ordered:
        return report

    head = ordered[0]
    if head.seq == 0:
        if head.manifest["prev"] != GENESIS_PREV:
            report.problems.append(Finding(head.name, 0, "first entry of the chain does not start from genesis"))
    else:
        report.warnings.append(
            Finding(
                head.name,
                head.seq,
                f"set starts at seq {head.seq}: "
                + ("entry 0 is" if head.seq == 1 else f"entries 0..{head.seq - 1} are") + " not in it "
                "(freed after acknowledgement, or a partial export); their link is checked from here on",
            )
        )

    for prev, cur in zip(ordered, ordered[1:], strict=False):
        if cur.seq != prev.seq + 1:
            lo, hi = prev.seq + 1, cur.seq - 1
            gap = f"entry {lo} is" if lo == hi else f"entries {lo}..{hi} are"
            report.problems.append(
                Finding(cur.name, cur.seq, f"{gap} missing before this one (deleted or withheld)")
            )
        elif cur.manifest["prev"] != prev.hash:
            report.problems.append(
                Finding(
                    cur.name,
                    cur.seq,
                    f"does not link to seq {prev.seq}: its prev hash differs from that entry's hash "
                    "(an entry was altered, replaced or replayed)",
                )
            )
    # A segment re-sealed from the background ring (8.9) keeps the boot that recorded it and
    # stands where headquarters' request put it: boots and signing order are the rest's.
    recorded_in_order = [e for e in ordered if not _from_background(e)]
    for prev, cur in zip(recorded_in_order, recorded_in_order[1:], strict=False):
        _check_boot_and_time(prev, cur, report)
    _check_boot_starts(recorded_in_order, report)
    _check_footage_gaps(ordered, report)

    last = ordered[-1]
    report.clean_end = last.kind == "event" and last.event == "shutdown"
    if not report.clean_end:
        report.warnings.append(
            Finding(
                last.name,
                last.seq,
                "chain ends without a clean shutdown event: later entries may be missing, "
                "the unit may still be running, or it lost power",
            )
        )
    return report


def _from_background(e: Entry) -> bool:
    return e.kind == "segment" and BACKGROUND_FLAG in e.manifest["flags"]


def _majority_device(entries: list[Entry]) -> str:
    counts: dict[str, int] = defaultdict(int)
    for e in entries:
        counts[str(e.manifest["device_id"])] += 1
    return max(sorted(counts), key=lambda d: counts[d])


def _check_boot_and_time(prev: Entry, cur: Entry, report: ChainReport) -> None:
    pt, ct = prev.manifest["time"], cur.manifest["time"]
    if prev.manifest["boot_id"] == cur.manifest["boot_id"]:
        if cur.kind == "segment" and "recovered" in cur.manifest["flags"]:
            return  # sealed by the next boot, whose monotonic clock may have restarted
        if ct["signed_mono_ns"] < pt["signed_mono_ns"]:
            report.problems.append(
                Finding(cur.name, cur.seq, f"signed before seq {prev.seq} in the same boot (entries out of order)")
            )
        return
    if not (prev.kind == "event" and prev.event == "shutdown"):
        report.warnings.append(
            Finding(
                cur.name,
                cur.seq,
                f"the unit restarted after seq {prev.seq} without a clean shutdown (power loss or crash)",
            )
        )


def _check_boot_starts(ordered: list[Entry], report: ChainReport) -> None:
    """Every boot's first entry in the set must be its boot event (unless the set starts mid-boot)."""
    seen_boots: set[str] = set()
    for i, e in enumerate(ordered):
        boot = e.manifest["boot_id"]
        if boot in seen_boots:
            if i and ordered[i - 1].manifest["boot_id"] != boot:
                report.problems.append(Finding(e.name, e.seq, f"boot {boot} resumes after another boot"))
            continue
        seen_boots.add(boot)
        if i == 0:
            continue
        if not (e.kind == "event" and e.event == "boot"):
            report.problems.append(Finding(e.name, e.seq, "a new boot begins without a boot event"))


def _check_footage_gaps(ordered: list[Entry], report: ChainReport) -> None:
    """Consecutive segments of one recording must abut, unless an event between them explains the hole."""
    last_seg: dict[str, Entry] = {}
    explained_since: dict[str, bool] = {}
    for e in ordered:
        if e.kind == "event":
            if e.event in GAP_EXPLAINING_EVENTS:
                for key in explained_since:
                    explained_since[key] = True
            continue
        rec = e.manifest.get("recording_id")
        if not isinstance(rec, str) or "recovered" in e.manifest["flags"]:
            continue  # a salvaged segment ends where the power or the disk failed; events explain it
        prev = last_seg.get(rec)
        if prev is not None and prev.seq < e.seq:
            gap = e.manifest["time"]["mono_start_ns"] - prev.manifest["time"]["mono_end_ns"]
            if gap < 0:
                report.problems.append(
                    Finding(e.name, e.seq, f"overlaps seq {prev.seq} by {_fmt_s(-gap)} in recording {rec}")
                )
            elif gap > 0 and not explained_since.get(rec, False) and e.manifest["boot_id"] == prev.manifest["boot_id"]:
                report.problems.append(
                    Finding(
                        e.name,
                        e.seq,
                        f"{_fmt_s(gap)} of footage missing after seq {prev.seq} in recording {rec}, "
                        "with no event explaining it",
                    )
                )
        last_seg[rec] = e
        explained_since[rec] = False
