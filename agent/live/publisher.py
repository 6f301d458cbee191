"""The unit's live publisher: one WebRTC connection to headquarters' media server, offered with WHIP.

aiortc (imported only here, only when a stream starts) runs on the publisher's own thread in its
own asyncio loop. The video track hands aiortc packets the live encoder already made (aiortc only
packetises them), so keyframes, bitrate and the codec's settings stay ours. aiortc answers a
viewer's keyframe request (PLI/FIR) and headquarters' bitrate estimate (REMB) inside its RTP
sender, for its own encoder; :func:`_tap_rtcp` wraps that one handler on our sender's instance
to pass both on to the live encoder (tests/unit/test_live_publisher.py holds aiortc to it).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from agent.live.audio import LiveAudioFeed
from agent.live.bitrate import Bounds, Report, news, next_bitrate
from agent.live.encoder import LiveEncoder, LiveEncoderError
from agent.live.feed import LiveFeed

log = logging.getLogger(__name__)

FEED_WAIT_S = 0.5
CONNECT_TIMEOUT_S = 20.0
ADAPT_INTERVAL_S = 1.0


class LiveError(Exception):
    """A stream could not be started or was lost (the message says which and why)."""


@dataclass(frozen=True, slots=True)
class IceServer:
    """A STUN or TURN server headquarters named for this stream (time-limited TURN credentials)."""

    urls: tuple[str, ...]
    username: str = ""
    credential: str = ""


@dataclass(frozen=True, slots=True)
class Offer:
    """What headquarters answered to the WHIP offer: the SDP answer and the resource to DELETE."""

    answer_sdp: str
    resource_url: str


class Whip(Protocol):
    """RFC 9725 signalling to headquarters, signed with the device key. Blocking calls; the
    publisher runs them in a worker thread."""

    def ice_servers(self) -> tuple[IceServer, ...]: ...

    def publish(self, offer_sdp: str) -> Offer: ...

    def delete(self, resource_url: str) -> None: ...


@dataclass(slots=True)
class PublisherStats:
    frames_sent: int = 0
    keyframe_requests: int = 0
    remb_bps: int | None = None
    loss_fraction: float | None = None
    rtt_s: float | None = None
    bitrate_bps: int = 0
    state: str = "new"
    error: str | None = None


class LivePublisher:
    """One live stream from ``feed`` to headquarters.

    ``start`` returns at once; the thread connects (WHIP offer, ICE, DTLS) and then sends until
    ``stop`` or until the connection fails, when ``on_end(reason)`` is called once from the
    publisher's thread. Thread contract: ``start``/``stop``/``status`` from any one owner thread;
    aiortc objects live only on the publisher's thread; ``stats`` is replaced, never mutated in place
    from outside it.
    """

    def __init__(self, feed: LiveFeed, encoder: LiveEncoder, whip: Whip, bounds: Bounds,
                 ice_servers: tuple[IceServer, ...], relay_only: bool, on_end: Callable[[str], None],
                 audio: LiveAudioFeed | None = None) -> None:
        self._feed = feed
        self._audio = audio  # the recording's unmuted Opus packets, when [live] audio = "on"
        self._encoder = encoder
        self._whip = whip
        self._bounds = bounds
        self._ice_servers = ice_servers
        self._relay_only = relay_only
        self._on_end = on_end
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._stats = PublisherStats(bitrate_bps=encoder.bitrate_bps)
        self._ended = threading.Event()

    def start(self) -> None:
        self._feed.open()
        if self._audio is not None:
            self._audio.open()
        self._thread = threading.Thread(target=self._run, name="live", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """End the stream (DELETE the WHIP resource, close the connection); idempotent."""
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(stopping.set)
        self._feed.close()
        if self._audio is not None:
            self._audio.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    def status(self) -> dict[str, object]:
        return {**dataclasses.asdict(self._stats), "feed": self._feed.get_status(),
                "audio": None if self._audio is None else self._audio.get_status(),
                "encoder": {"frames": self._encoder.frames, "keyframes": self._encoder.keyframes,
                            "reopened": self._encoder.reopened}}

    def _set(self, **changes: Any) -> None:
        self._stats = dataclasses.replace(self._stats, **changes)

    def _run(self) -> None:
        reason = "stopped"
        try:
            asyncio.run(self._main())
        except LiveError as exc:
            reason = str(exc)
            self._set(state="failed", error=reason)
            log.error("live view: %s", exc)
        except Exception as exc:  # aiortc or the encoder: the stream ends, the unit records on
            reason = f"live view failed: {exc}"
            self._set(state="failed", error=reason)
            log.exception("live view failed")
        finally:
            self._feed.close()
            if self._audio is not None:
                self._audio.close()
            self._encoder.close()
            self._ended.set()
            self._on_end(reason)

    async def _main(self) -> None:
        from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
        from aiortc.rtcconfiguration import RTCIceTransportPolicy
        from aiortc.rtcrtpsender import RTCRtpSender

        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        if not self._feed.active:  # stop() came before the loop existed
            return
        ice = self._ice_servers or await asyncio.to_thread(self._whip.ice_servers)
        servers = [RTCIceServer(list(s.urls), s.username or None, s.credential or None) for s in ice]
        policy = RTCIceTransportPolicy.RELAY if self._relay_only else RTCIceTransportPolicy.ALL
        pc = RTCPeerConnection(RTCConfiguration(iceServers=servers, iceTransportPolicy=policy))
        resource: str | None = None
        try:
            track = _track_class()(self._feed, self._encoder, self._stopping, self._count_frame)
            transceiver = pc.addTransceiver(track, direction="sendonly")
            caps = RTCRtpSender.getCapabilities("video")
            h264 = [c for c in caps.codecs if c.mimeType.lower() in ("video/h264", "video/rtx")]
            transceiver.setCodecPreferences(h264)
            _tap_rtcp(transceiver.sender, self._on_rtcp)
            if self._audio is not None:
                sound = pc.addTransceiver(_audio_track_class()(self._audio, self._stopping), direction="sendonly")
                opus = [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType.lower() == "audio/opus"]
                sound.setCodecPreferences(opus)
            self._set(state="offering")
            await pc.setLocalDescription(await pc.createOffer())
            offer = await asyncio.to_thread(self._whip.publish, pc.localDescription.sdp)
            resource = offer.resource_url
            await pc.setRemoteDescription(RTCSessionDescription(offer.answer_sdp, "answer"))
            self._set(state="connecting")
            await self._until_connected(pc)
            self._set(state="streaming")
            log.info("live view: streaming to headquarters")
            await self._adapt_until_stopped(pc, transceiver.sender)
        finally:
            self._feed.close()
            if self._audio is not None:
                self._audio.close()
            await pc.close()
            if resource is not None:
                try:
                    await asyncio.to_thread(self._whip.delete, resource)
                except Exception as exc:  # headquarters also ends a resource whose media stops
                    log.warning("live view: ending the WHIP resource: %s", exc)
            if self._stats.state != "failed":
                self._set(state="ended")

    async def _until_connected(self, pc: Any) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONNECT_TIMEOUT_S
        assert self._stopping is not None
        while pc.connectionState != "connected":
            if pc.connectionState in ("failed", "closed"):
                raise LiveError(f"live view: the connection to headquarters' media server {pc.connectionState}")
            if self._stopping.is_set():
                return
            if loop.time() > deadline:
                raise LiveError(f"live view: no media connection within {CONNECT_TIMEOUT_S:g} s "
                                "(check headquarters' TURN server and the unit's network)")
            await asyncio.sleep(0.05)

    async def _adapt_until_stopped(self, pc: Any, sender: Any) -> None:
        """Every second: the bitrate from a new receiver report and REMB (none new: hold); end on stop or failure."""
        assert self._stopping is not None
        acted_on: Report | None = None
        while not self._stopping.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), ADAPT_INTERVAL_S)
            if pc.connectionState in ("failed", "closed"):
                raise LiveError(f"live view: the media connection {pc.connectionState}")
            report = None
            for stat in (await sender.getStats()).values():
                if stat.type == "remote-inbound-rtp":
                    report = Report(stat.timestamp, None if stat.fractionLost is None else stat.fractionLost / 256,
                                    stat.roundTripTime)
            loss, rtt = news(report, acted_on)
            acted_on = report or acted_on
            rate = next_bitrate(self._encoder.bitrate_bps, self._bounds, loss, rtt, self._stats.remb_bps)
            self._encoder.bitrate_bps = rate
            self._set(loss_fraction=loss, rtt_s=rtt, bitrate_bps=rate)

    def _count_frame(self) -> None:
        self._set(frames_sent=self._stats.frames_sent + 1)

    def _on_rtcp(self, kind: str, value: int) -> None:
        if kind == "keyframe":
            self._encoder.request_keyframe()
            self._set(keyframe_requests=self._stats.keyframe_requests + 1)
        elif kind == "remb":
            self._set(remb_bps=value)


def _tap_rtcp(sender: Any, on_rtcp: Callable[[str, int], None]) -> None:
    """Pass the sender's keyframe requests and REMB estimates to ``on_rtcp`` before aiortc sees them."""
    from aiortc.rtp import RTCP_PSFB_APP, RTCP_PSFB_FIR, RTCP_PSFB_PLI, RtcpPsfbPacket, unpack_remb_fci

    original: Callable[[Any], Awaitable[None]] = sender._handle_rtcp_packet

    async def handle(packet: Any) -> None:
        if isinstance(packet, RtcpPsfbPacket):
            if packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
                on_rtcp("keyframe", 0)
            elif packet.fmt == RTCP_PSFB_APP:
                with contextlib.suppress(ValueError):
                    bitrate, _ = unpack_remb_fci(packet.fci)
                    on_rtcp("remb", bitrate)
        await original(packet)

    sender._handle_rtcp_packet = handle


def _track_class() -> type:
    """The aiortc video track class, defined on first use (aiortc is imported only for a stream)."""
    from aiortc import MediaStreamTrack

    class LiveTrack(MediaStreamTrack):  # type: ignore[misc]
        """Encoded packets of the newest camera frames; waits for frames in a worker thread."""

        kind = "video"

        def __init__(self, feed: LiveFeed, encoder: LiveEncoder, stopping: asyncio.Event,
                     counted: Callable[[], None]) -> None:
            super().__init__()
            self._feed, self._encoder, self._stopping, self._counted = feed, encoder, stopping, counted
            self._pending: list[Any] = []

        async def recv(self) -> Any:
            from aiortc.mediastreams import MediaStreamError

            while not self._pending:
                if self._stopping.is_set() or not self._feed.active:
                    raise MediaStreamError
                frame = await asyncio.to_thread(self._feed.take, FEED_WAIT_S)
                if frame is None:
                    continue
                try:
                    self._pending = await asyncio.to_thread(self._encoder.encode, frame)
                except LiveEncoderError as exc:
                    log.error("%s", exc)
                    raise MediaStreamError from exc
            self._counted()
            return self._pending.pop(0)

    return LiveTrack


def _audio_track_class() -> type:
    """The aiortc audio track class: the recording's Opus packets as they are (aiortc only
    packetises them, ``OpusEncoder.pack``); silence on the wire while the wearer has muted."""
    from fractions import Fraction

    import av
    from aiortc import MediaStreamTrack

    ns = Fraction(1, 1_000_000_000)

    class LiveAudioTrack(MediaStreamTrack):  # type: ignore[misc]
        kind = "audio"

        def __init__(self, audio: LiveAudioFeed, stopping: asyncio.Event) -> None:
            super().__init__()
            self._audio, self._stopping = audio, stopping

        async def recv(self) -> Any:
            from aiortc.mediastreams import MediaStreamError

            while True:
                if self._stopping.is_set() or not self._audio.active:
                    raise MediaStreamError
                packet = await asyncio.to_thread(self._audio.take, FEED_WAIT_S)
                if packet is not None:
                    out = av.Packet(packet.data)
                    out.pts, out.time_base = packet.pts_ns, ns
                    return out

    return LiveAudioTrack
