"""The pre-event buffer: the last N seconds of encoded packets, bounded by duration, cut at a keyframe.

Pure: no clock, no I/O. Like picamera2's CircularOutput2, the bound is a duration and the
buffered footage always starts at a keyframe of the anchor (primary video) track, so that
the first segment of a recording decodes from its first frame.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from agent.media.packets import EncodedPacket


class PreEventBuffer:
    """Holds packets while the unit is ready but not recording. Not thread-safe (recorder-owned)."""

    def __init__(self, duration_ns: int, anchor_track: str | None, tracks_needing_keyframe: Iterable[str]) -> None:
        if duration_ns < 0:
            raise ValueError("duration_ns must be >= 0")
        self.duration_ns = duration_ns
        self.anchor = anchor_track
        self._keyed = set(tracks_needing_keyframe)
        self._packets: deque[EncodedPacket] = deque()
        self._anchor_keys: deque[int] = deque()
        self._cut_ns: int | None = None
        self._newest_end_ns: int | None = None
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._packets)

    def push(self, packet: EncodedPacket) -> None:
        if self.duration_ns == 0:
            return
        self._packets.append(packet)
        self.bytes += len(packet.data)
        self._newest_end_ns = max(packet.end_ns, self._newest_end_ns or packet.end_ns)
        if packet.track == self.anchor and packet.keyframe:
            self._anchor_keys.append(packet.pts_ns)
        if packet.track == self.anchor or self.anchor is None:
            self._prune(packet.end_ns)

    def _prune(self, newest_ns: int) -> None:
        """Keep from the newest anchor keyframe that is at least ``duration`` old."""
        horizon = newest_ns - self.duration_ns
        if self.anchor is None:
            cut = horizon
        else:
            while len(self._anchor_keys) >= 2 and self._anchor_keys[1] <= horizon:
                self._anchor_keys.popleft()
            if not self._anchor_keys or self._anchor_keys[0] > horizon:
                return  # not yet a full duration behind a keyframe: keep everything
            cut = self._anchor_keys[0]
        self._cut_ns = cut
        while self._packets and self._packets[0].pts_ns < cut:
            self.bytes -= len(self._packets.popleft().data)

    def start_ns(self) -> int | None:
        """Where the buffered footage begins (the anchor's first keyframe), None when empty."""
        if self.anchor is not None:
            return self._anchor_keys[0] if self._anchor_keys else None
        return self._packets[0].pts_ns if self._packets else None

    def span_ns(self) -> int:
        """How much footage a drain would give now: from the start point to the newest packet's end."""
        start = self.start_ns()
        return 0 if start is None or self._newest_end_ns is None else max(0, self._newest_end_ns - start)

    def drain(self) -> list[EncodedPacket]:
        """Everything buffered from the start point on, each keyed track from its own first keyframe."""
        start = self.start_ns()
        out: list[EncodedPacket] = []
        started: set[str] = set()
        if start is not None:
            for p in self._packets:
                if p.pts_ns < start:
                    continue
                if p.track in self._keyed and p.track not in started:
                    if not p.keyframe:
                        continue
                    started.add(p.track)
                out.append(p)
        self.clear()
        return out

    def clear(self) -> None:
        self._packets.clear()
        self._anchor_keys.clear()
        self._cut_ns = None
        self._newest_end_ns = None
        self.bytes = 0

    def drop_track(self, track: str) -> None:
        """Forget one track's packets (audio when muted, or when audio is not buffered)."""
        kept = deque(p for p in self._packets if p.track != track)
        self.bytes = sum(len(p.data) for p in kept)
        self._packets = kept


class BufferedDrops:
    """Frames a sensor lost while the unit was buffering, kept as long as the pre-event footage
    they punch holes in, so the recording that takes that footage declares them. Pure."""

    def __init__(self, keep_ns: int) -> None:
        self.keep_ns = keep_ns
        self._drops: deque[tuple[int, str, int]] = deque()  # (mono_ns, track, count), oldest first

    def add(self, mono_ns: int, track: str, count: int) -> None:
        self._drops.append((mono_ns, track, count))
        horizon = mono_ns - self.keep_ns
        while self._drops and self._drops[0][0] < horizon:
            self._drops.popleft()

    def take_since(self, start_ns: int) -> dict[str, int]:
        """Frames lost per track at or after ``start_ns``; forgets them all."""
        out: dict[str, int] = {}
        for mono, track, count in self._drops:
            if mono >= start_ns:
                out[track] = out.get(track, 0) + count
        self._drops.clear()
        return out
