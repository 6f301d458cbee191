"""The live rendition's frame queue: the camera thread hands frames over without ever waiting."""

from __future__ import annotations

import collections
import threading
from typing import Generic, TypeVar

from hal.camera import VideoFrame

T = TypeVar("T")


class DropOldestQueue(Generic[T]):
    """A bounded hand-over from a producer thread that must never wait to one consumer thread:
    while closed, items are not kept; when ``depth`` items already wait, the oldest is dropped and
    counted. Thread contract: one lock held for a few attribute updates."""

    def __init__(self, depth: int) -> None:
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self._items: collections.deque[T] = collections.deque()
        self._depth = depth
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._active = False
        self.offered = 0
        self.taken = 0
        self.dropped = 0

    @property
    def active(self) -> bool:
        return self._active

    def open(self) -> None:
        """Start keeping items (a stream is starting)."""
        with self._lock:
            self._active = True
            self._opened()

    def _opened(self) -> None:
        """Inside the lock, when the queue opens."""

    def close(self) -> None:
        """Stop keeping items and forget those waiting; a waiting ``take`` returns None."""
        with self._lock:
            self._active = False
            self._items.clear()
            self._ready.notify_all()

    def _keep(self, item: T) -> None:
        """Inside the lock: keep ``item``, dropping the oldest when full."""
        self.offered += 1
        if len(self._items) >= self._depth:
            self._items.popleft()
            self.dropped += 1
        self._items.append(item)
        self._ready.notify()

    def take(self, timeout_s: float) -> T | None:
        """The oldest waiting item, waiting up to ``timeout_s`` (0 polls); None on timeout or close."""
        with self._lock:
            if not self._items and self._active and timeout_s > 0:
                self._ready.wait(timeout_s)
            if not self._items:
                return None
            self.taken += 1
            return self._items.popleft()

    def get_status(self) -> dict[str, object]:
        with self._lock:
            return {"active": self._active, "offered": self.offered, "taken": self.taken,
                    "dropped": self.dropped, "waiting": len(self._items)}


class LiveFeed(DropOldestQueue[VideoFrame]):
    """Frames from a camera's sensor thread to the live encoder, newest first.

    ``offer`` is called on the camera's sensor thread for every frame and never blocks: while no
    stream is open it only reads a flag; while one is, it keeps a reference (frames are read-only
    arrays) to at most one frame per ``1 / fps`` and, when ``depth`` frames already wait, drops
    the oldest and counts it. ``take`` is for the one live encoder thread. Thread contract: one
    lock held for a few attribute updates; the evidence path never waits on the live encoder.
    """

    def __init__(self, fps: float, depth: int) -> None:
        super().__init__(depth)
        self._period_ns = round(1e9 / fps)
        self._next_due_ns: int | None = None

    def _opened(self) -> None:
        self._next_due_ns = None

    def offer(self, frame: VideoFrame) -> None:
        """From the camera thread: keep ``frame`` if a stream is open and it is due. Never blocks
        on the consumer (the lock is held only for these few lines)."""
        if not self._active:
            return
        with self._lock:
            if not self._active:
                return
            due = self._next_due_ns
            # a quarter period of slack: capture jitter never turns 30 -> 15 fps into 30 -> 10
            if due is not None and frame.mono_ns < due - self._period_ns // 4:
                return
            # the next slot follows this slot, not this frame (no drift); after a gap, this frame
            late = due is None or frame.mono_ns > due + self._period_ns
            self._next_due_ns = (frame.mono_ns if late or due is None else due) + self._period_ns
            self._keep(frame)
