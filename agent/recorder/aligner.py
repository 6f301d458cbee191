"""Hold packets of the other tracks until the anchor track has passed them: a pure aligner."""

from __future__ import annotations

from collections import deque

from agent.media.packets import EncodedPacket

HOLD_MAX_NS = 1_000_000_000  # a track waits at most this long for the anchor track to catch up


class TrackAligner:
    """Orders packets for the segment pipeline: a rotation happens at an anchor keyframe, so a
    packet of another track is released only once the anchor has reached its time, or once it
    has waited :data:`HOLD_MAX_NS` (the anchor stalled). No anchor: everything passes at once.

    Pure: time comes in as an argument. Not thread-safe (the recorder thread owns it).
    """

    def __init__(self, anchor: str | None, hold_max_ns: int = HOLD_MAX_NS) -> None:
        self._anchor = anchor
        self._hold_max_ns = hold_max_ns
        self._held: deque[EncodedPacket] = deque()
        self._anchor_ns = 0

    def __len__(self) -> int:
        return len(self._held)

    def offer(self, p: EncodedPacket) -> EncodedPacket | None:
        """The packet to route now (an anchor packet), or None if it is held."""
        if self._anchor is None or p.track == self._anchor:
            self._anchor_ns = max(self._anchor_ns, p.pts_ns)
            return p
        self._held.append(p)
        return None

    def release(self, now_ns: int) -> list[EncodedPacket]:
        """Held packets the anchor has passed, or that waited too long, oldest first."""
        limit = now_ns - self._hold_max_ns
        out: list[EncodedPacket] = []
        while self._held:
            p = self._held[0]
            if p.pts_ns > self._anchor_ns and p.pts_ns > limit:
                break
            out.append(self._held.popleft())
        return out

    def release_all(self) -> list[EncodedPacket]:
        out = list(self._held)
        self._held.clear()
        return out
