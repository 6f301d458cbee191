"""The live stream's sound: the recording's own Opus packets, never while the wearer has muted."""

from __future__ import annotations

from agent.live.feed import DropOldestQueue
from agent.media.packets import EncodedPacket


class LiveAudioFeed(DropOldestQueue[EncodedPacket]):
    """Audio packets from the recorder thread (``Recorder.tap_audio``) to the live publisher.

    ``offer(packet, muted)`` runs on the recorder thread for every audio packet, with the mute
    state the recording judged it by, and never blocks: while no stream is open it reads one flag;
    a muted packet is never kept (the viewers hear nothing the evidence does not hold); when
    ``depth`` packets already wait, the oldest is dropped and counted. ``take`` is for the
    publisher's one audio track. No second encoder: the packets are the evidence's, sent as they are.
    """

    def __init__(self, depth: int = 25) -> None:
        super().__init__(depth)
        self.muted = 0

    def offer(self, packet: EncodedPacket, muted: bool) -> None:
        if not self._active:
            return
        with self._lock:
            if not self._active:
                return
            if muted:
                self.muted += 1
                return
            self._keep(packet)

    def get_status(self) -> dict[str, object]:
        with self._lock:
            muted = self.muted
        return {**super().get_status(), "muted": muted}
