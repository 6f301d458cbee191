"""Live view on the unit: requests from headquarters in, the stop rules every half second, one stream at a time."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from agent.config.model import LiveConfig
from agent.live import rules
from agent.live.audio import LiveAudioFeed
from agent.live.bitrate import Bounds
from agent.live.encoder import LiveEncoder
from agent.live.feed import LiveFeed
from agent.live.publisher import IceServer, LivePublisher, Offer, Whip
from agent.live.rules import Rules, StopReason, Stream
from hal.clock import Clock

log = logging.getLogger(__name__)

TICK_S = 0.5
MAX_ICE_SERVERS = 4
NS = 1_000_000_000


class LiveRequestError(Exception):
    """A live-view request the unit refuses (off in the config, malformed): the message says why."""


class ClientWhip:
    """:class:`Whip` over the unit's signed HTTPS client (one connection of its own, not the sync worker's)."""

    def __init__(self, client_factory: Callable[[], Any]) -> None:
        self._factory = client_factory

    def ice_servers(self) -> tuple[IceServer, ...]:
        client = self._factory()
        try:
            return tuple(IceServer((s["url"],), s["username"], s["credential"]) for s in client.whip_ice())
        finally:
            client.close()

    def publish(self, offer_sdp: str) -> Offer:
        client = self._factory()
        try:
            answer, url = client.whip_publish(offer_sdp)
        finally:
            client.close()
        return Offer(answer, url)

    def delete(self, resource_url: str) -> None:
        client = self._factory()
        try:
            client.whip_delete(resource_url)
        finally:
            client.close()


def ice_servers_from(args: Any) -> tuple[IceServer, ...]:
    """The ``ice_servers`` of a ``live.start`` request, checked (headquarters signed it, but a
    malformed one is refused in one line, not half-used)."""
    if args is None:
        return ()
    if not isinstance(args, list) or len(args) > MAX_ICE_SERVERS:
        raise LiveRequestError(f"ice_servers: expected a list of at most {MAX_ICE_SERVERS} servers")
    out = []
    for s in args:
        urls = s.get("urls") if isinstance(s, dict) else None
        urls = [urls] if isinstance(urls, str) else urls
        if not isinstance(urls, list) or not urls or not all(
                isinstance(u, str) and u.split(":", 1)[0] in ("stun", "turn", "turns") and len(u) < 256 for u in urls):
            raise LiveRequestError("ice_servers: each needs urls of stun:, turn: or turns:")
        user, cred = s.get("username", ""), s.get("credential", "")
        if not isinstance(user, str) or not isinstance(cred, str):
            raise LiveRequestError("ice_servers: username and credential must be text")
        out.append(IceServer(tuple(urls), user, cred))
    return tuple(out)


class LiveController:
    """Owns the unit's live view. ``request`` (from the request channel's handler thread or the
    control socket) and the controller's own thread (``live``, every 0.5 s) serialise on one lock;
    the publisher runs on its own thread and reports its end through ``_ended``. Starts and stops
    go to the recorder as ``live`` commands (signed events, the wearer's indicators)."""

    def __init__(self, settings: LiveConfig, feed: LiveFeed, whip: Whip, clock: Clock,
                 post_command: Callable[..., None], recording: Callable[[], bool],
                 publisher_factory: Callable[..., Any] = LivePublisher, audio: LiveAudioFeed | None = None) -> None:
        self._cfg = settings
        self._feed = feed
        self._audio = audio
        self._whip = whip
        self._clock = clock
        self._post = post_command
        self._recording = recording
        self._new_publisher = publisher_factory
        self._rules = Rules(settings.auto_while_recording, settings.stop_with_recording,
                            int(settings.max_duration_s * NS), int(settings.idle_stop_s * NS))
        self._lock = threading.Lock()
        self._stream: Stream | None = None
        self._publisher: Any = None  # a LivePublisher (or what publisher_factory makes)
        self._was_recording = False
        self._auto_spent = False
        self._last_ice: tuple[IceServer, ...] = ()
        self._counts: dict[str, int] = {}  # viewers per headquarters node, for the stream running
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.streams = 0
        self.last_end: str | None = None

    # -- requests ---------------------------------------------------------------------------------

    def request(self, kind: str, args: dict[str, Any]) -> dict[str, Any]:
        """``live.start`` (operator, viewers, ice_servers) or ``live.stop`` (operator, viewers, reason)."""
        if not self._cfg.enabled:
            raise LiveRequestError("live view is off on this unit (live.enabled = false)")
        operator = str(args.get("operator", "unknown"))[:64]
        viewers = args.get("viewers", 0)
        if not isinstance(viewers, int) or isinstance(viewers, bool) or not 0 <= viewers <= 10_000:
            raise LiveRequestError("viewers: expected a count 0..10000")
        node = str(args.get("node", ""))[:32]
        now = self._clock.monotonic_ns()
        with self._lock:
            if kind == "live.start":
                ice = ice_servers_from(args.get("ice_servers"))
                if self._stream is None:
                    self._counts = {node: max(0, viewers)}
                    self._start(rules.started(now, operator, viewers), ice)
                else:
                    self._counts, total = rules.counted(self._counts, node, viewers)
                    self._stream = rules.viewers_changed(self._stream, total, now)
            elif kind == "live.stop":
                if self._stream is not None:
                    if args.get("reason") == "no-viewers":  # the idle rule decides, a viewer may return
                        self._counts, total = rules.counted(self._counts, node, 0)
                        self._stream = rules.viewers_changed(self._stream, total, now)
                    else:
                        self._end(StopReason.REQUESTED, operator)
            else:
                raise LiveRequestError(f"unknown live request {kind!r}")
            return self._status_locked()

    # -- the loop -----------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="live", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        with self._lock:
            if self._stream is not None:
                self._end(StopReason.SHUTDOWN, "agent")

    def _run(self) -> None:
        while not self._stop.wait(TICK_S):
            try:
                self.tick()
            except Exception:
                log.exception("live view: periodic check failed")

    def tick(self) -> None:
        recording = self._recording()
        now = self._clock.monotonic_ns()
        with self._lock:
            if not recording:
                self._auto_spent = False
            stream = self._stream
            if stream is not None:
                why = rules.should_stop(self._rules, stream, recording, self._was_recording, now)
                if why is not None:
                    self._end(why, stream.operator)
                    self._auto_spent = stream.auto and why is StopReason.TIME_LIMIT
            elif self._cfg.enabled and rules.should_auto_start(self._rules, recording, self._auto_spent):
                self._start(rules.started(now, "auto", 0, auto=True), self._last_ice)
            self._was_recording = recording

    # -- inside the lock ------------------------------------------------------------------------------

    def _start(self, stream: Stream, ice: tuple[IceServer, ...]) -> None:
        cfg = self._cfg
        encoder = LiveEncoder(cfg.width, cfg.height, cfg.fps, cfg.bitrate_bps, cfg.keyframe_interval_s)
        bounds = Bounds(cfg.min_bitrate_bps, cfg.max_bitrate_bps)
        publisher: Any = None

        def ended(reason: str) -> None:
            self._ended(publisher, reason)

        publisher = self._new_publisher(self._feed, encoder, self._whip, bounds, ice, cfg.ice_relay_only, ended,
                                        audio=self._audio)
        self._stream, self._publisher, self._last_ice = stream, publisher, ice or self._last_ice
        self.streams += 1
        self._post("live", f"live:{stream.operator}", on=True, notice=cfg.notice,
                   detail={"by": stream.operator, "viewers": stream.viewers, "trigger": "auto" if stream.auto
                           else "request", "width": cfg.width, "height": cfg.height, "fps": round(cfg.fps),
                           "audio": self._audio is not None})
        log.info("live view: starting for %s (%d viewer(s))", stream.operator, stream.viewers)
        publisher.start()

    def _end(self, why: StopReason, by: str) -> None:
        stream, publisher = self._stream, self._publisher
        self._stream, self._publisher, self._counts = None, None, {}
        if stream is None:
            return
        if publisher is not None:
            threading.Thread(target=publisher.stop, name="live-stop", daemon=True).start()
        self.last_end = why.value
        duration_ms = (self._clock.monotonic_ns() - stream.started_ns) // 1_000_000
        self._post("live", f"live:{by}", on=False, notice=self._cfg.notice,
                   detail={"by": by, "viewers": stream.viewers, "peak_viewers": stream.peak_viewers,
                           "reason": why.value, "duration_ms": duration_ms})
        log.info("live view: stopped (%s) after %.1f s", why.value, duration_ms / 1000)

    def _ended(self, publisher: Any, reason: str) -> None:
        """From the publisher's thread: its connection ended (stopped, or failed)."""
        with self._lock:
            if self._publisher is publisher and self._stream is not None:
                log.warning("live view: the stream ended on its own: %s", reason)
                self._end(StopReason.FAILED, self._stream.operator)

    def _status_locked(self) -> dict[str, Any]:
        s, p = self._stream, self._publisher
        return {"enabled": self._cfg.enabled, "streaming": s is not None,
                "operator": None if s is None else s.operator, "viewers": 0 if s is None else s.viewers,
                "streams": self.streams, "last_end": self.last_end,
                "publisher": None if p is None else p.status()}

    def get_status(self) -> dict[str, Any]:
        with self._lock:
            return self._status_locked()
