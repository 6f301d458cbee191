"""The media server behind live view: a protocol, and its Janus videoroom implementation."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from typing import Any, Protocol

from hq.live.janus import JanusClient, JanusError


class BrokerError(Exception):
    """The media server refused or failed (the message says what to check)."""


@dataclass(frozen=True, slots=True)
class Publication:
    """A unit's stream in the media server: its handle and the publisher id viewers subscribe to."""

    device_id: str
    handle: int  # 0: published through another node (found in the media server, not ours to end)
    feed: int
    room: int
    generation: int


@dataclass(frozen=True, slots=True)
class Subscription:
    handle: int
    offer_sdp: str


class MediaBroker(Protocol):
    """Where units publish and viewers subscribe; forwards RTP without re-encoding (an SFU)."""

    def publish(self, device_id: str, offer_sdp: str, bitrate_bps: int) -> tuple[Publication, str]: ...

    def unpublish(self, pub: Publication) -> None: ...

    def subscribe(self, pub: Publication) -> Subscription: ...

    def start(self, sub: Subscription, answer_sdp: str) -> None: ...

    def unsubscribe(self, sub: Subscription) -> None: ...

    def alive(self, pub: Publication) -> bool: ...

    def find(self, device_id: str) -> Publication | None: ...


def room_of(device_id: str) -> int:
    """A stable videoroom number per unit (53 bits: JSON-safe)."""
    return int.from_bytes(hashlib.sha256(device_id.encode()).digest()[:6], "big") & ((1 << 53) - 1) or 1


class JanusBroker:
    """Janus's videoroom: one room per unit, created on its first publish, H.264 only (the unit's
    codec; Janus never transcodes), a keyframe asked of the publisher whenever a viewer joins
    (``fir_freq``) and the unit's REMB ceiling the room's ``bitrate``. Thread-safe."""

    def __init__(self, client: JanusClient) -> None:
        self._janus = client
        self._rooms: set[tuple[int, int]] = set()  # (generation, room) known to exist
        self._lock = threading.Lock()

    def _ensure_room(self, room: int, bitrate_bps: int) -> None:
        self._janus.session()
        key = (self._janus.generation, room)
        with self._lock:
            if key in self._rooms:
                return
        handle = self._janus.attach()
        try:
            if not self._janus.request(handle, {"request": "exists", "room": room}).get("exists"):
                self._janus.request(handle, {"request": "create", "room": room, "publishers": 1,
                                             "videocodec": "h264", "audiocodec": "opus", "bitrate": bitrate_bps,
                                             "bitrate_cap": True, "fir_freq": 1, "notify_joining": False,
                                             "is_private": True})
        finally:
            self._janus.detach(handle)
        with self._lock:
            self._rooms.add(key)

    def publish(self, device_id: str, offer_sdp: str, bitrate_bps: int) -> tuple[Publication, str]:
        room = room_of(device_id)
        try:
            self._ensure_room(room, bitrate_bps)
            handle = self._janus.attach()
            data, jsep = self._janus.message(
                handle, {"request": "joinandconfigure", "room": room, "ptype": "publisher", "display": device_id,
                         "audio": True, "video": True},
                {"type": "offer", "sdp": offer_sdp})
        except JanusError as exc:
            raise BrokerError(str(exc)) from exc
        if jsep is None or jsep.get("type") != "answer":
            self._janus.detach(handle)
            raise BrokerError("Janus gave no SDP answer to the unit's offer")
        return Publication(device_id, handle, int(data["id"]), room, self._janus.generation), jsep["sdp"]

    def unpublish(self, pub: Publication) -> None:
        if pub.handle and pub.generation == self._janus.generation:
            self._janus.detach(pub.handle)

    def subscribe(self, pub: Publication) -> Subscription:
        try:
            handle = self._janus.attach()
            _, jsep = self._janus.message(handle, {"request": "join", "room": pub.room, "ptype": "subscriber",
                                                   "streams": [{"feed": pub.feed}]})
        except JanusError as exc:
            raise BrokerError(str(exc)) from exc
        if jsep is None or jsep.get("type") != "offer":
            self._janus.detach(handle)
            raise BrokerError("Janus gave no offer for the viewer")
        return Subscription(handle, jsep["sdp"])

    def start(self, sub: Subscription, answer_sdp: str) -> None:
        try:
            self._janus.message(sub.handle, {"request": "start"}, {"type": "answer", "sdp": answer_sdp})
        except JanusError as exc:
            raise BrokerError(str(exc)) from exc

    def unsubscribe(self, sub: Subscription) -> None:
        self._janus.detach(sub.handle)

    def _publishers(self, room: int) -> list[dict[str, Any]]:
        """The room's participants whose media is up (none when the room does not exist yet)."""
        handle = self._janus.attach()
        try:
            data: dict[str, Any] = self._janus.request(handle, {"request": "listparticipants", "room": room})
        except JanusError:
            return []
        finally:
            self._janus.detach(handle)
        return [p for p in data.get("participants", []) if p.get("publisher")]

    def alive(self, pub: Publication) -> bool:
        if pub.handle and pub.generation != self._janus.generation:
            return False
        return any(p.get("id") == pub.feed for p in self._publishers(pub.room))

    def find(self, device_id: str) -> Publication | None:
        """A stream of ``device_id`` that another node brokered (the media server is the one
        place every node sees): the unit's room holds its publisher, named by its device id."""
        try:
            self._janus.session()
            pubs = [p for p in self._publishers(room_of(device_id)) if p.get("display") == device_id]
        except JanusError:
            return None
        if not pubs:
            return None
        return Publication(device_id, 0, int(pubs[0]["id"]), room_of(device_id), self._janus.generation)
