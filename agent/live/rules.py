"""When a live stream starts and stops: pure decisions over the stream's state, ``now`` given."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass


class StopReason(enum.Enum):
    REQUESTED = "requested"  # an operator (or the wearer's unit API) ended it
    NO_VIEWERS = "no-viewers"  # the last viewer left idle_stop_s ago (or none came)
    TIME_LIMIT = "time-limit"
    RECORDING_STOPPED = "recording-stopped"
    FAILED = "failed"  # the connection could not be made or was lost for good
    SHUTDOWN = "shutdown"
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class Rules:
    """``max_duration_ns`` 0: no limit. ``idle_stop_ns``: how long a requested stream lives with no
    viewer (from its start, or from the last viewer's leaving). An automatic stream (recording
    with ``auto_while_recording``) waits for viewers as long as the recording lasts."""

    auto_while_recording: bool = False
    stop_with_recording: bool = True
    max_duration_ns: int = 1_800_000_000_000
    idle_stop_ns: int = 10_000_000_000


@dataclass(frozen=True, slots=True)
class Stream:
    """One stream as the rules see it. ``operator`` is headquarters' pseudonymous id of who asked
    (``auto`` for a stream the recording started)."""

    started_ns: int
    operator: str
    viewers: int
    viewerless_since_ns: int | None  # None while someone watches
    auto: bool = False
    peak_viewers: int = 0  # the most viewers headquarters reported at once (signed with the stop)


def started(now_ns: int, operator: str, viewers: int, auto: bool = False) -> Stream:
    viewers = max(0, viewers)
    return Stream(now_ns, operator, viewers, None if viewers > 0 else now_ns, auto, viewers)


def viewers_changed(stream: Stream, viewers: int, now_ns: int) -> Stream:
    """A new viewer count from headquarters."""
    viewers = max(0, viewers)
    if viewers > 0:
        return dataclasses.replace(stream, viewers=viewers, viewerless_since_ns=None,
                                   peak_viewers=max(stream.peak_viewers, viewers))
    since = stream.viewerless_since_ns if stream.viewerless_since_ns is not None else now_ns
    return dataclasses.replace(stream, viewers=0, viewerless_since_ns=since)


def counted(counts: dict[str, int], node: str, viewers: int) -> tuple[dict[str, int], int]:
    """Each headquarters node (or worker) counts the viewers it serves; a stream's viewers are the
    sum of the latest count of every node (``node`` "" for a headquarters that does not say)."""
    new = {**counts, node: max(0, viewers)}
    return new, sum(new.values())


def should_stop(rules: Rules, stream: Stream, recording: bool, was_recording: bool, now_ns: int) -> StopReason | None:
    """Why ``stream`` must stop now, or None. ``was_recording``: the recording state the last time
    the rules looked (a stop of the recording, not its absence, ends a stream)."""
    if rules.max_duration_ns and now_ns - stream.started_ns >= rules.max_duration_ns:
        return StopReason.TIME_LIMIT
    if rules.stop_with_recording and was_recording and not recording:
        return StopReason.RECORDING_STOPPED
    if stream.auto and recording:
        return None
    if stream.viewerless_since_ns is not None and now_ns - stream.viewerless_since_ns >= rules.idle_stop_ns:
        return StopReason.NO_VIEWERS
    return None


def should_auto_start(rules: Rules, recording: bool, spent: bool) -> bool:
    """Start an automatic stream: recording, configured so, and not already ended in this
    recording (a stream that hit its time limit is not restarted until the next recording)."""
    return rules.auto_while_recording and recording and not spent
