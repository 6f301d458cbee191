"""The recorder's inbox: typed messages, and a bound on the packets waiting in it."""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from agent.media.packets import EncodedPacket
from hal.gnss import GnssFix

MAX_PENDING_PACKETS = 4096  # ~40 s of a 30 fps camera, thermal and audio: a recorder this far behind is stuck


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    args: dict[str, Any]
    actor: str
    reply: Future[dict[str, Any]] = field(default_factory=Future)


@dataclass(frozen=True, slots=True)
class Drops:
    """``count`` frames (samples for audio) of ``track`` were lost by the sensor before ``mono_ns``."""

    track: str
    count: int
    mono_ns: int


@dataclass(frozen=True, slots=True)
class Shutdown:
    """Seal what is open and end the thread."""


Message = EncodedPacket | GnssFix | Drops | Command | Shutdown


class Inbox:
    """A FIFO from every thread to the recorder thread.

    Packets beyond :data:`MAX_PENDING_PACKETS` waiting are dropped and counted per track (a
    recorder that far behind would otherwise grow without bound until the unit runs out of
    memory): the recorder declares them as drops, like a sensor's. Commands, fixes, drop
    reports and the shutdown are never dropped.
    Thread-safe: ``put`` from any thread, ``get`` from the recorder thread only.
    """

    def __init__(self, max_packets: int = MAX_PENDING_PACKETS) -> None:
        self._cond = threading.Condition()
        self._items: deque[Message] = deque()
        self._packets = 0
        self._max_packets = max_packets
        self._overflow: dict[str, int] = {}  # frames dropped here since the last take_overflow()

    def put(self, msg: Message) -> None:
        with self._cond:
            if isinstance(msg, EncodedPacket):
                if self._packets >= self._max_packets:
                    self._overflow[msg.track] = self._overflow.get(msg.track, 0) + msg.frames
                    return
                self._packets += 1
            self._items.append(msg)
            self._cond.notify()

    def get(self, timeout_s: float) -> Message | None:
        """The oldest message, or None if none came within ``timeout_s``."""
        with self._cond:
            if not self._items and not self._cond.wait_for(lambda: bool(self._items), timeout_s):
                return None
            msg = self._items.popleft()
            if isinstance(msg, EncodedPacket):
                self._packets -= 1
            return msg

    def take_overflow(self) -> dict[str, int]:
        """Frames per track dropped because the inbox was full, since the last call."""
        with self._cond:
            out, self._overflow = self._overflow, {}
            return out
