"""The background recording (record after the fact): one camera's frames, decimated to a low rate
and scaled down, encoded by an encoder of its own and sealed into the background ring; with
``[background] audio = "on"``, the microphone's packets too, never while the unit is muted.

The camera's sensor thread only calls :meth:`BackgroundRecorder.offer`, which decides in
constant time whether the frame is due (pure ``keep_frame``) and appends a reference to a short
queue that drops its oldest frame when full: it never blocks, copies or encodes, so the main
recording cannot be held up by this one. Audio comes already encoded (the recording's own
packets, no second encoder) through :meth:`offer_audio`, from the recorder thread, which passes
the mute state it judged the packet by: a muted packet is never kept, and the ring segment it
would have gone into is flagged ``muted``. Everything else runs on the ``background`` thread.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.background.policy import NS_PER_S, expired, keep_frame
from agent.background.ring import BackgroundRing
from agent.media.encoders import VideoEncoder
from agent.media.muxer import SegmentMuxer
from agent.media.packets import EncodedPacket, MediaError, TrackSpec
from agent.recorder.segments import Segment, track_manifest
from agent.store import RingEntry
from hal.camera import VideoFrame
from hal.clock import Clock

log = logging.getLogger(__name__)

QUEUE_FRAMES = 4  # at 10 fps, 0.4 s of slack for the encoder; older frames are dropped first
# Audio waits for the video it goes with (it is muxed in time order): a few seconds of 20 ms packets.
AUDIO_QUEUE_PACKETS = 400
AUDIO_WAIT_NS = NS_PER_S // 2  # video waits at most this much footage for its audio (a silent microphone)
CHECKPOINT_S = 1.0  # as the main recording's evidence.flush_interval_s default
TRIM_EVERY_S = 60.0


@dataclass(frozen=True, slots=True)
class BackgroundSettings:
    camera: str
    width: int
    height: int
    fps: int
    bitrate_bps: int
    keep_s: float
    segment_s: float
    audio: bool = False


class BackgroundRecorder:
    """Records one camera into the background ring. Thread contract: ``offer`` from the camera's
    sensor thread (never blocks); ``start``, ``stop``, ``get_status``, ``entries`` and ``remove``
    from any thread; encoding, muxing, sealing and trimming on the ``background`` thread
    (``remove`` and the trim take one lock, so two never delete at once)."""

    def __init__(self, settings: BackgroundSettings, ring: BackgroundRing, clock: Clock,
                 make_encoder: Callable[[], VideoEncoder] | None = None, audio_track: TrackSpec | None = None) -> None:
        """``audio_track``: the microphone's track, whose packets ``offer_audio`` receives (needed
        when ``settings.audio``)."""
        if settings.audio and audio_track is None:
            raise ValueError("background audio needs the microphone's track")
        self.settings = settings
        self._audio_track = audio_track if settings.audio else None
        # (packet, muted): a muted packet is never written, only flags the segment its time falls in
        self._audio: collections.deque[tuple[EncodedPacket, bool]] = collections.deque(maxlen=AUDIO_QUEUE_PACKETS)
        self._audio_heard_ns = 0  # the end of the newest audio packet offered, muted or not
        self._muted_ns: list[int] = []  # background thread only: times of muted packets not yet sealed
        self.ring = ring
        self._clock = clock
        self._make_encoder = make_encoder or self._default_encoder
        self._period_ns = NS_PER_S // settings.fps
        self._next_due_ns = 0
        self._queue: collections.deque[VideoFrame] = collections.deque(maxlen=QUEUE_FRAMES)
        self._ready = threading.Condition()
        self._stop = threading.Event()
        self._trim_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="background", daemon=True)
        self._status_lock = threading.Lock()
        self._status: dict[str, Any] = {"offered": 0, "dropped": 0, "encoded": 0, "sealed": 0, "last_error": None,
                                        "audio": self._audio_track is not None, "audio_packets": 0,
                                        "audio_dropped": 0, "audio_muted": 0, "audio_late": 0}

    def _default_encoder(self) -> VideoEncoder:
        s = self.settings
        return VideoEncoder("background", s.width, s.height, s.fps, 1, pixel_format="yuv420p",
                            bitrate_bps=s.bitrate_bps, gop_frames=2 * s.fps, codec="libx264", threads=1,
                            scale=True)

    # -- the camera's side ------------------------------------------------------------------

    def offer(self, frame: VideoFrame) -> None:
        """From the camera's sensor thread: keep a reference to the frame if it is due. Never blocks."""
        keep, self._next_due_ns = keep_frame(frame.mono_ns, self._next_due_ns, self._period_ns)
        if not keep:
            return
        with self._ready:
            dropped = len(self._queue) == self._queue.maxlen
            self._queue.append(frame)  # a full deque drops its oldest
            self._ready.notify()
        with self._status_lock:
            self._status["offered"] += 1
            self._status["dropped"] += dropped

    def offer_audio(self, packet: EncodedPacket, muted: bool) -> None:
        """From the recorder thread: an audio packet and whether the unit was muted when the
        recording judged it. Muted packets are never kept; never blocks."""
        if self._audio_track is None or packet.track != self._audio_track.name:
            return
        with self._ready:
            self._audio_heard_ns = max(self._audio_heard_ns, packet.end_ns)
            dropped = len(self._audio) == self._audio.maxlen
            self._audio.append((packet, muted))
        with self._status_lock:
            self._status["audio_muted" if muted else "audio_packets"] += 1
            self._status["audio_dropped"] += dropped

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Seal what is open and stop."""
        self._stop.set()
        with self._ready:
            self._ready.notify()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def get_status(self) -> dict[str, Any]:
        """Counters, the settings, and what the ring holds on disk (one indexed query)."""
        entries, size, oldest, newest = self.ring.stats()
        s = self.settings
        with self._status_lock:
            return {**self._status, "camera": s.camera, "ring_head_seq": self.ring.head_seq,
                    "width": s.width, "height": s.height, "fps": s.fps, "keep_h": s.keep_s / 3600,
                    "ring": {"entries": entries, "bytes": size, "oldest_utc_ns": oldest, "newest_utc_ns": newest}}

    def entries(self) -> list[RingEntry]:
        """The ring's entries on disk, oldest first (any thread)."""
        return self.ring.entries()

    def remove(self, entries: list[RingEntry], why: str) -> int:
        """Let these ring entries go (storage pressure, from the storage thread); the bytes freed."""
        with self._trim_lock:
            return self.ring.remove(entries, why)

    # -- the background thread --------------------------------------------------------------

    def _take(self) -> VideoFrame | None:
        with self._ready:
            while not self._queue and not self._stop.is_set():
                self._ready.wait(0.5)
            return self._queue.popleft() if self._queue else None

    def _run(self) -> None:
        encoder: VideoEncoder | None = None
        writing: _Writing | None = None
        pending: collections.deque[EncodedPacket] = collections.deque()  # video waiting for its audio
        next_trim_ns = 0
        while True:
            frame = self._take()
            if frame is None:
                break
            try:
                if encoder is None:
                    encoder = self._make_encoder()
                pending.extend(encoder.encode(frame))
                writing = self._release(writing, encoder.spec, pending, final=False)
                with self._status_lock:
                    self._status["encoded"] += 1
                now = self._clock.monotonic_ns()
                if now >= next_trim_ns:
                    next_trim_ns = now + int(TRIM_EVERY_S * NS_PER_S)
                    self._trim()
            except Exception as exc:  # noqa: BLE001 - the background never takes the unit down
                log.exception("background recording: %s; starting a new segment", exc)
                with self._status_lock:
                    self._status["last_error"] = f"{type(exc).__name__}: {exc}"[:200]
                if writing is not None:
                    self.ring.discard(writing.seg.open)
                writing, encoder = None, None
                pending.clear()
        if encoder is not None:
            try:
                pending.extend(encoder.flush())
                writing = self._release(writing, encoder.spec, pending, final=True)
                if writing is not None:
                    self._write_audio(writing, writing.seg.end_ns)
                    self._seal(writing, encoder.spec)
            except Exception:
                log.exception("background recording: sealing the last segment failed")

    def _release(self, writing: _Writing | None, spec: TrackSpec, pending: collections.deque[EncodedPacket],
                 final: bool) -> _Writing | None:
        """Write the video packets whose audio has arrived (or that waited AUDIO_WAIT_NS of
        footage, or all when ``final``), each after the audio from before it: the microphone's
        packets reach the recorder a chunk later than the camera's frames reach this thread."""
        while pending:
            with self._ready:
                heard_ns = self._audio_heard_ns
            waited_ns = pending[-1].pts_ns - pending[0].pts_ns
            if not (final or self._audio_track is None or pending[0].pts_ns <= heard_ns
                    or waited_ns >= AUDIO_WAIT_NS):
                break
            packet = pending.popleft()
            writing = self._write_audio(writing, packet.pts_ns)
            writing = self._write(writing, spec, packet)
        return writing

    def _write(self, writing: _Writing | None, spec: TrackSpec, packet: EncodedPacket) -> _Writing | None:
        if writing is not None and packet.keyframe and \
                packet.pts_ns - writing.seg.start_ns >= int(self.settings.segment_s * NS_PER_S):
            self._seal(writing, spec)
            writing = None
        if writing is None:
            if not packet.keyframe:
                return None  # a ring segment starts at a keyframe
            writing = self._open(spec, packet)
        writing.muxer.write(packet)
        seg = writing.seg
        seg.frames["background"] = seg.frames.get("background", 0) + 1
        seg.end_ns = max(seg.end_ns, packet.pts_ns + packet.duration_ns)
        if packet.pts_ns - seg.open.last_checkpoint_ns >= int(CHECKPOINT_S * NS_PER_S):
            seg.open.writer.checkpoint(packet.pts_ns)
            seg.open.last_checkpoint_ns = packet.pts_ns
        return writing

    def _write_audio(self, writing: _Writing | None, until_ns: int) -> _Writing | None:
        """Mux the audio waiting from before ``until_ns`` (the next video packet) into the open
        segment, in time order, the segment's end following it; a muted packet is only noted, and
        flags the segment whose time it falls in ``muted`` when that is sealed. Audio from before
        the segment's start has nowhere to go."""
        with self._ready:
            due: list[tuple[EncodedPacket, bool]] = []
            while self._audio and self._audio[0][0].pts_ns < until_ns:
                due.append(self._audio.popleft())
        late = 0
        for packet, muted in due:
            if writing is None:
                continue  # before the ring's first keyframe: no segment holds this time
            seg = writing.seg
            if packet.pts_ns < seg.start_ns:
                late += not muted  # from before this segment, arrived after the last one was sealed
            elif muted:
                self._muted_ns.append(packet.pts_ns)
            else:
                writing.muxer.write(packet)
                seg.frames[packet.track] = seg.frames.get(packet.track, 0) + packet.frames
                seg.end_ns = max(seg.end_ns, packet.end_ns)
        if late:
            with self._status_lock:
                self._status["audio_late"] += late
        return writing

    def _tracks(self, spec: TrackSpec) -> list[TrackSpec]:
        return [spec] + ([self._audio_track] if self._audio_track is not None else [])

    def _open(self, spec: TrackSpec, packet: EncodedPacket) -> _Writing:
        utc = self._clock.utc_ns() - (self._clock.monotonic_ns() - packet.pts_ns)
        opened = self.ring.open_segment(packet.pts_ns, utc)
        muxer = SegmentMuxer(opened, self._tracks(spec), packet.pts_ns, title="bodycam background")
        return _Writing(Segment(opened, muxer, "", "background", packet.pts_ns), muxer)

    def _seal(self, writing: _Writing, spec: TrackSpec) -> None:
        seg = writing.seg
        if any(seg.start_ns <= t < seg.end_ns for t in self._muted_ns):
            seg.flags.add("muted")
        self._muted_ns = [t for t in self._muted_ns if t >= seg.end_ns]  # the next segment's, if any
        try:
            writing.muxer.close()
        except MediaError:
            self.ring.discard(seg.open)
            raise
        utc_end = seg.open.utc_start_ns + (seg.end_ns - seg.start_ns)
        flags = sorted(seg.flags | (set() if self._clock.quality().synced else {"clock-unsynced"}))
        self.ring.seal(seg.open, mono_end_ns=seg.end_ns, utc_end_ns=utc_end,
                       tracks=[track_manifest(t, seg) for t in self._tracks(spec)], flags=flags)
        with self._status_lock:
            self._status["sealed"] += 1

    def _trim(self) -> None:
        with self._trim_lock:
            old = expired(self.ring.entries(), self._clock.utc_ns(), self.settings.keep_s)
            self.ring.remove(old, f"older than {self.settings.keep_s / 3600:g} h")


@dataclass
class _Writing:
    seg: Segment
    muxer: SegmentMuxer

