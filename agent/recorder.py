"""The recorder: one thread that owns the pre-event buffer, the open segments and the chain.

Sensor threads encode and post packets; buttons, the control socket and the console post
commands. Everything that touches evidence happens on this one thread, in arrival order,
so there are no locks around the chain, the muxers or the state machine. ``status()`` is the
only call that reads from another thread; it returns a snapshot taken under a small lock.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from agent.chainlog import ChainLog, OpenSegment
from agent.fserrors import is_disk_full
from agent.fsutil import no_room, retry_when_full
from agent.media.muxer import SegmentMuxer
from agent.media.packets import EncodedPacket, MediaError, TrackSpec
from agent.prebuffer import PreEventBuffer
from agent.state import Event, PersistedState, State, StateFile, transition
from agent.store import Store
from agent.timekeeping import ClockStepDetector, gnss_offset_ns
from hal.clock import Clock
from hal.gnss import FixMode, GnssFix
from hal.indicators import Indicator, Indicators, Pattern

log = logging.getLogger(__name__)

HOLD_MAX_NS = 1_000_000_000  # a track waits at most this long for the anchor track to catch up
PRE_EVENT_MARGIN_NS = 250_000_000
PUBLISH_INTERVAL_NS = 100_000_000
REOPEN_INTERVAL_NS = 1_000_000_000  # after a storage fault, try a new segment at most once a second


class CommandError(Exception):
    """A command that cannot be done now (stop while not recording...), with the reason."""


@dataclass(frozen=True, slots=True)
class RecorderSettings:
    segment_ns: int
    pre_event_ns: int
    pre_event_audio: bool
    checkpoint_ns: int
    firmware: str


@dataclass
class _Segment:
    """A segment being recorded: the muxer, the sealing writer, and what its manifest will say."""

    open: OpenSegment
    muxer: SegmentMuxer
    recording_id: str
    trigger: str
    start_ns: int
    trigger_ns: int = 0  # when the recording was triggered: footage before it is pre-event
    pre_event_ns: int = 0
    end_ns: int = 0
    frames: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    marks: list[dict[str, Any]] = field(default_factory=list)
    notes: list[dict[str, Any]] = field(default_factory=list)
    fixes: list[dict[str, Any]] = field(default_factory=list)
    flags: set[str] = field(default_factory=set)
    switched: set[str] = field(default_factory=set)  # tracks that moved here from the previous segment
    started: set[str] = field(default_factory=set)  # video tracks that have had their first keyframe
    durable_frames: dict[str, int] = field(default_factory=dict)  # frames written before the last checkpoint


@dataclass(frozen=True, slots=True)
class _Command:
    name: str
    args: dict[str, Any]
    actor: str
    reply: Future[dict[str, Any]]


class Recorder:
    """Owns the evidence path. Thread contract: ``post_*`` and ``command`` from any thread;
    everything else runs on the recorder's own thread, started by ``start``.

    When a segment write fails because the disk is full, no new segment is opened until the
    storage maintainer has measured the disk again and posted its level (``on_space_fault``
    asks it to, at once): footage never takes the space freed to sign the events
    (``make_room``, used for the state file; the chain log and the store have their own).
    """

    def __init__(
        self,
        *,
        chain: ChainLog,
        store: Store,
        clock: Clock,
        settings: RecorderSettings,
        tracks: list[TrackSpec],
        anchor: str | None,
        state_file: StateFile,
        indicators: Indicators | None = None,
        request_keyframes: Callable[[], None] = lambda: None,
        make_room: Callable[[], bool] = no_room,
        on_space_fault: Callable[[], None] = lambda: None,
    ) -> None:
        self._chain = chain
        self._make_room = make_room
        self._on_space_fault = on_space_fault
        self._space_fault = False  # a write found the disk full; cleared by the next storage level
        self._store = store
        self._clock = clock
        self._s = settings
        self._tracks = tracks
        self._track_kind = {t.name: t.kind for t in tracks}
        self._anchor = anchor
        self._state_file = state_file
        self._indicators = indicators
        self._request_keyframes = request_keyframes
        keyed = [t.name for t in tracks if t.kind == "video"]
        # the newest buffered frame trails the trigger by the capture-to-encode latency: keep a
        # little more than asked, so the recording always begins at least pre_event_s before it
        margin = PRE_EVENT_MARGIN_NS if settings.pre_event_ns else 0
        self._pre = PreEventBuffer(settings.pre_event_ns + margin, anchor, keyed)
        self._inbox: queue.Queue[Any] = queue.Queue()
        self._hold: deque[EncodedPacket] = deque()
        self._anchor_ns = 0
        self._state = State.OFF
        self._current: _Segment | None = None
        self._closing: _Segment | None = None
        self._boundary_ns: int | None = None
        self._recording_id: str | None = None
        self._stealth = False
        self._muted = False
        self._last_fix: GnssFix | None = None
        self._drops_total: dict[str, int] = dict.fromkeys(self._track_kind, 0)
        self._lost_total: dict[str, int] = dict.fromkeys(self._track_kind, 0)
        self._open_failed_ns: int | None = None
        self._storage_level = "ok"
        self._trigger_ns = 0
        self._mark_seq = 0
        self._buffered_drops: deque[tuple[int, str, int]] = deque()
        self._steps = ClockStepDetector()
        self._frames_total: dict[str, int] = dict.fromkeys(self._track_kind, 0)
        self._segments_sealed = 0
        self._last_error: str | None = None
        self._beat_ns = 0  # monotonic time the loop last turned; read unlocked (an int store is atomic)
        self._published_ns = 0
        self._status: dict[str, Any] = {}
        self._status_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self._stopping = threading.Event()

    # -- called from other threads ---------------------------------------------------------------

    def post_packet(self, packet: EncodedPacket) -> None:
        self._inbox.put(packet)

    def post_fix(self, fix: GnssFix) -> None:
        self._inbox.put(fix)

    def post_drops(self, track: str, count: int, mono_ns: int) -> None:
        """``count`` frames (samples for audio) of ``track`` were lost by the sensor before ``mono_ns``."""
        self._inbox.put(("drops", track, count, mono_ns))

    def command(self, name: str, actor: str, timeout_s: float | None = 10.0, **args: Any) -> dict[str, Any]:
        """Run a command on the recorder thread and wait for its answer; raises CommandError."""
        fut: Future[dict[str, Any]] = Future()
        self._inbox.put(_Command(name, args, actor, fut))
        return fut.result(timeout=timeout_s)

    def post_command(self, name: str, actor: str, **args: Any) -> None:
        """Queue a command without waiting for its answer (from sensor threads and callbacks)."""
        self._inbox.put(_Command(name, args, actor, Future()))

    def status(self) -> dict[str, Any]:
        with self._status_lock:
            return dict(self._status)

    def start(self, resume_recording: bool) -> None:
        self._state = transition(State.OFF, Event.POWER_ON)
        self._persist()
        self._apply_indicators()
        self._publish()
        self._thread.start()
        if resume_recording:
            self._inbox.put(_Command("start", {"trigger": "resume"}, "agent", Future()))

    def stop(self, timeout_s: float = 30.0) -> None:
        """Seal what is open, write nothing more, and end the thread."""
        self._inbox.put(("shutdown",))
        self._thread.join(timeout_s)

    def step(self, msg: Any) -> None:
        """Handle one message on the caller's thread, as the recorder thread would.

        For tests and replay tools that drive the recorder synchronously; never call it while
        the thread started by ``start`` is running.
        """
        if self._thread.is_alive():
            raise RuntimeError("step() while the recorder thread runs")
        if self._state is State.OFF:
            self._state = transition(State.OFF, Event.POWER_ON)
        self._handle(msg)
        self._release_held(force=False)
        self._housekeeping()
        self._publish()

    def step_command(self, name: str, actor: str = "test", **args: Any) -> dict[str, Any]:
        """``command`` for synchronous drivers (see ``step``)."""
        fut: Future[dict[str, Any]] = Future()
        self.step(_Command(name, args, actor, fut))
        return fut.result(timeout=0)

    def step_shutdown(self) -> None:
        if self._thread.is_alive():
            raise RuntimeError("step_shutdown() while the recorder thread runs")
        self._shutdown()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def last_beat_ns(self) -> int:
        """Monotonic time the recorder thread last went round its loop (0 before it started)."""
        return self._beat_ns

    # -- the recorder thread ---------------------------------------------------------------------

    def _run(self) -> None:
        tick_s = min(0.25, self._s.checkpoint_ns / 4e9)
        while True:
            self._beat_ns = self._clock.monotonic_ns()
            try:
                msg = self._inbox.get(timeout=tick_s)
            except queue.Empty:
                msg = None
            if isinstance(msg, tuple) and msg[0] == "shutdown":
                try:
                    self._shutdown()
                except Exception:  # the thread ends regardless: stop() must never wait on a loop
                    log.exception("recorder: shutting down")
                return
            try:
                self._handle(msg)
                self._release_held(force=False)
                self._housekeeping()
            except Exception as exc:  # the recorder never dies silently: log, count, carry on
                self._last_error = f"{type(exc).__name__}: {exc}"
                log.exception("recorder: %s", self._last_error)
            # packets arrive ~100 times a second: the status snapshot is refreshed at most every
            # PUBLISH_INTERVAL_NS for them, and at once after anything else (commands, ticks)
            now = self._clock.monotonic_ns()
            if not isinstance(msg, EncodedPacket) or now - self._published_ns >= PUBLISH_INTERVAL_NS:
                self._published_ns = now
                self._publish()

    def _handle(self, msg: Any) -> None:
        if msg is None:
            return
        if isinstance(msg, EncodedPacket):
            self._on_packet(msg)
        elif isinstance(msg, GnssFix):
            self._on_fix(msg)
        elif isinstance(msg, _Command):
            self._on_command(msg)
        elif isinstance(msg, tuple) and msg[0] == "drops":
            _, track, count, mono = msg
            self._drops_total[track] = self._drops_total.get(track, 0) + count
            seg = self._current
            if seg is not None:
                seg.dropped[track] = seg.dropped.get(track, 0) + count
            else:
                # buffering: remembered so the pre-event footage that contains the hole declares it
                self._buffered_drops.append((mono, track, count))
                horizon = mono - self._s.pre_event_ns - 2 * HOLD_MAX_NS
                while self._buffered_drops and self._buffered_drops[0][0] < horizon:
                    self._buffered_drops.popleft()

    # -- packets -------------------------------------------------------------------------------

    def _on_packet(self, p: EncodedPacket) -> None:
        self._frames_total[p.track] = self._frames_total.get(p.track, 0) + p.frames
        if self._muted and self._track_kind.get(p.track) == "audio":
            return
        if p.track == self._anchor or self._anchor is None:
            self._anchor_ns = max(self._anchor_ns, p.pts_ns)
            self._route(p)
        else:
            self._hold.append(p)

    def _release_held(self, force: bool) -> None:
        """Release held packets once the anchor track has passed them (or they waited too long)."""
        limit = self._clock.monotonic_ns() - HOLD_MAX_NS
        while self._hold:
            p = self._hold[0]
            if not force and p.pts_ns > self._anchor_ns and p.pts_ns > limit:
                return
            self._route(self._hold.popleft())

    def _route(self, p: EncodedPacket) -> None:
        if self._state is not State.RECORDING:
            buffering = self._storage_level in ("ok", "low")
            if buffering and (self._track_kind.get(p.track) != "audio" or self._s.pre_event_audio):
                self._pre.push(p)
            return
        seg = self._current
        if seg is None:
            seg = self._reopen(p)
            if seg is None:
                self._count_lost(p)
                return
        due = p.track == self._anchor and p.keyframe and p.pts_ns - seg.start_ns >= self._s.segment_ns
        if due and self._closing is None and self._rotate(p.pts_ns):
            seg = self._current
            assert seg is not None
        closing = self._closing
        if closing is not None and p.track not in seg.switched:
            needs_key = self._track_kind.get(p.track) == "video"
            if p.pts_ns >= seg.start_ns and (p.keyframe or not needs_key):
                seg.switched.add(p.track)
            else:
                self._write(closing, p)
                return
        self._write(seg, p)
        if closing is not None and self._closing is closing and seg.switched >= set(self._track_kind):
            self._closing = None
            self._seal(closing, end_ns=seg.start_ns)

    def _write(self, seg: _Segment, p: EncodedPacket) -> None:
        if p.pts_ns < seg.start_ns:
            return  # before this recording's first keyframe: not decodable, never part of it
        if p.track not in seg.started:
            if self._track_kind.get(p.track) == "video" and not p.keyframe:
                return  # a video track begins at a keyframe (asked for when recording starts)
            seg.started.add(p.track)
        try:
            seg.muxer.write(p)
        except (MediaError, OSError) as exc:
            self._segment_failed(seg, exc)
            self._count_lost(p)
            return
        seg.frames[p.track] = seg.frames.get(p.track, 0) + p.frames
        seg.end_ns = max(seg.end_ns, p.end_ns)

    def _count_lost(self, p: EncodedPacket) -> None:
        """A packet recorded while no segment could take it (storage failing): counted, never silent."""
        self._lost_total[p.track] = self._lost_total.get(p.track, 0) + p.frames

    def _rotate(self, boundary_ns: int) -> bool:
        """Start the next segment at this anchor keyframe; if it cannot be opened, keep the current one."""
        old = self._current
        assert old is not None and self._recording_id is not None
        new = self._try_open(boundary_ns, old.trigger)
        if new is None:
            return False
        new.switched.add(self._anchor or "")
        # a track with nothing in the old segment (audio kept out of the pre-event buffer) has
        # nothing to finish there: it starts in the new one
        new.switched.update(set(self._track_kind) - set(old.frames))
        self._closing, self._current = old, new
        return True

    def _try_open(self, start_ns: int, trigger: str) -> _Segment | None:
        if self._space_fault:
            return None  # the disk was full: wait for the maintainer's measurement
        now = self._clock.monotonic_ns()
        if self._open_failed_ns is not None and now - self._open_failed_ns < REOPEN_INTERVAL_NS:
            return None
        try:
            seg = self._open_segment(start_ns, trigger)
        except (MediaError, OSError) as exc:
            self._open_failed_ns = now
            self._last_error = f"cannot open a segment: {exc}"
            log.error("recording, but %s; retrying at the next keyframe", self._last_error)
            if is_disk_full(exc):
                self._disk_full_seen()
            return None
        self._open_failed_ns = None
        if self._stealth:
            seg.flags.add("stealth")
        if self._muted:
            seg.flags.add("muted")
        return seg

    def _reopen(self, p: EncodedPacket) -> _Segment | None:
        """While recording without a segment (after a storage fault), start one at an anchor keyframe."""
        if (p.track != self._anchor and self._anchor is not None) or not p.keyframe:
            return None
        self._current = self._try_open(p.pts_ns, "continued")
        if self._current is not None:
            log.warning("recording continues in a new segment after a storage fault")
        return self._current

    def _segment_failed(self, seg: _Segment, exc: BaseException) -> None:
        """Writing a segment failed (disk full, I/O error): keep what is durable, carry on recording.

        The segment is never marked sealed on the strength of a failed write or fsync. What reached
        the disk is salvaged now, as recovery would after a power cut; if even that fails, the
        partial file stays for recovery at the next start. A signed event explains the gap.
        """
        full = is_disk_full(exc)
        self._last_error = f"writing segment {seg.open.segment_id}: {exc}"
        log.error("storage fault: %s", self._last_error)
        if full:
            self._disk_full_seen()
        if seg is self._current:
            self._current = None
        if seg is self._closing:
            self._closing = None
        for track, n in seg.frames.items():
            # what was written after the last checkpoint may not have reached the disk: count it lost
            self._lost_total[track] = self._lost_total.get(track, 0) + n - seg.durable_frames.get(track, 0)
        with contextlib.suppress(Exception):
            seg.muxer.close()
        with contextlib.suppress(Exception):
            seg.open.fh.close()
        salvaged: int | None = None
        try:
            salvaged = self._chain.salvage_now(seg.open.path)
        except Exception as salvage_exc:
            log.error("could not salvage %s now (%s): left for recovery at the next start", seg.open.path.name,
                      salvage_exc)
        try:
            self._chain.event(
                "storage-full" if full else "storage-error",
                {"error": str(exc)[:200], "salvaged_seq": salvaged},
                recording_id=self._recording_id,
            )
        except Exception as event_exc:
            log.error("could not record the storage fault in the chain: %s", event_exc)

    def _disk_full_seen(self) -> None:
        """Open no segment until the maintainer has measured the disk (and says how full it is)."""
        if self._space_fault:
            return
        self._space_fault = True
        try:
            self._on_space_fault()
        except Exception:
            log.exception("recorder: reporting the full disk to the storage maintainer")

    def _open_segment(self, start_ns: int, trigger: str) -> _Segment:
        assert self._recording_id is not None
        utc = self._clock.utc_ns() - (self._clock.monotonic_ns() - start_ns)
        opened = self._chain.open_segment(start_ns, utc, self._recording_id)
        try:
            muxer = SegmentMuxer(
                opened,
                self._tracks,
                start_ns,
                title=f"{self._chain.device_id} recording {self._recording_id}",
                metadata={"device_id": self._chain.device_id, "recording_id": self._recording_id},
            )
        except MediaError:
            opened.fh.close()
            raise
        seg = _Segment(opened, muxer, self._recording_id, trigger, start_ns, trigger_ns=self._trigger_ns)
        if not self._clock.quality().synced:
            seg.flags.add("clock-unsynced")
        return seg

    def _seal(self, seg: _Segment, end_ns: int | None = None) -> None:
        try:
            self._seal_or_raise(seg, end_ns)
        except (MediaError, OSError) as exc:
            self._segment_failed(seg, exc)

    def _seal_or_raise(self, seg: _Segment, end_ns: int | None) -> None:
        seg.muxer.close()
        end = end_ns if end_ns is not None else max(seg.end_ns, seg.start_ns)
        utc_end = self._clock.utc_ns() - (self._clock.monotonic_ns() - end)
        fields = {
            "recording_id": seg.recording_id,
            "trigger": seg.trigger,
            "container": "matroska",
            "tracks": [self._track_manifest(t, seg) for t in self._tracks],
            "marks": seg.marks,
            "pre_event_ns": seg.pre_event_ns,
        }
        seg.pre_event_ns = max(0, min(end, seg.trigger_ns) - seg.start_ns)
        fields["pre_event_ns"] = seg.pre_event_ns
        if seg.pre_event_ns:
            seg.flags.add("pre-event")
        sealed = {"gnss": seg.fixes, "notes": seg.notes} if (seg.fixes or seg.notes) else None
        result = self._chain.seal(
            seg.open,
            mono_end_ns=end,
            utc_end_ns=utc_end,
            fields=fields,
            flags=sorted(seg.flags),
            sealed_meta=sealed,
            priority=1 if seg.marks or seg.flags - {"clock-unsynced"} else 0,
        )
        self._segments_sealed += 1
        log.info(
            "sealed seq %d: %.1f s, %s, %d bytes%s",
            result.signed.seq,
            (end - seg.start_ns) / 1e9,
            ", ".join(f"{k} {v}" for k, v in sorted(seg.frames.items())),
            result.bytes_total,
            f", {len(seg.marks)} mark(s)" if seg.marks else "",
        )

    def _track_manifest(self, t: TrackSpec, seg: _Segment) -> dict[str, Any]:
        params: dict[str, Any] = {"rate": f"{t.rate_num}/{t.rate_den}"}
        if t.width is not None:
            params.update(width=t.width, height=t.height, pixel_format=t.pixel_format)
        if t.sample_rate_hz is not None:
            params.update(sample_rate_hz=t.sample_rate_hz, channels=t.channels)
        if t.bitrate_bps is not None:
            params["bitrate_bps"] = t.bitrate_bps
        return {
            "name": t.name,
            "kind": t.kind,
            "codec": t.codec,
            "params": params,
            "frames": seg.frames.get(t.name, 0),
            "dropped": seg.dropped.get(t.name, 0),
        }

    # -- commands ------------------------------------------------------------------------------

    def _on_command(self, cmd: _Command) -> None:
        try:
            handler = getattr(self, f"_cmd_{cmd.name.replace('-', '_')}", None)
            if handler is None:
                raise CommandError(f"unknown command {cmd.name!r}")
            answer: dict[str, Any] = handler(cmd.actor, **cmd.args)
        except CommandError as exc:
            self._audit(cmd, "refused", reason=str(exc))
            cmd.reply.set_exception(exc)
            return
        except Exception as exc:
            self._audit(cmd, "failed", reason=str(exc))
            cmd.reply.set_exception(exc)
            raise
        self._audit(cmd, "ok", **answer)
        cmd.reply.set_result(answer)

    def _audit(self, cmd: _Command, outcome: str, **detail: Any) -> None:
        """Audit a command; a store that cannot take the record is logged, and the command is
        still answered (a caller waiting on it must never time out because the disk is full)."""
        try:
            self._store.audit(cmd.actor, cmd.name, "recorder", outcome, **detail)
        except Exception as exc:
            log.error("cannot audit %s by %s (%s): %s", cmd.name, cmd.actor, outcome, exc)

    def _cmd_start(self, actor: str, trigger: str = "ctl") -> dict[str, Any]:
        if self._state is State.RECORDING:
            raise CommandError("already recording")
        if self._storage_level in ("full", "exhausted"):
            raise CommandError(
                f"storage {self._storage_level}: new recordings are refused until headquarters acknowledges "
                "footage and space is freed (nothing unacknowledged is ever overwritten)"
            )
        recording_id = str(uuid.uuid4())
        # signed first: a start that cannot be recorded in the chain is refused, state unchanged
        self._chain.event("record-start", {"trigger": trigger, "by": actor}, recording_id=recording_id)
        self._state = transition(self._state, Event.RECORD)
        self._recording_id = recording_id
        start = self._pre.start_ns()
        held = self._pre.drain()
        if start is None:
            # no buffered footage: begin now; each video track from the next keyframe, asked for now
            self._request_keyframes()
            start = self._clock.monotonic_ns()
        self._open_failed_ns = None
        self._trigger_ns = self._clock.monotonic_ns()
        self._mark_seq = 0
        seg = self._current = self._try_open(start, trigger)
        pre_event_ns = max(0, self._trigger_ns - start) if held else 0
        if seg is not None:
            for mono, track, count in self._buffered_drops:
                if mono >= start:
                    seg.dropped[track] = seg.dropped.get(track, 0) + count
            for p in held:
                self._route(p)  # through rotation: long pre-event footage is cut into segments too
        else:
            for p in held:
                self._count_lost(p)
        self._buffered_drops.clear()
        self._persist()
        self._apply_indicators(pulse=True)
        log.info("RECORDING (%s by %s), pre-event %.1f s", trigger, actor, pre_event_ns / 1e9)
        return {"recording_id": self._recording_id, "pre_event_s": round(pre_event_ns / 1e9, 3)}

    def _cmd_stop(self, actor: str) -> dict[str, Any]:
        if self._state is not State.RECORDING:
            raise CommandError("not recording")
        rec = self._stop_recording(actor)
        self._apply_indicators(pulse=True)
        log.info("READY (stopped by %s)", actor)
        return {"recording_id": rec}

    def _stop_recording(self, by: str) -> str:
        """Seal what is open and leave RECORDING; the stop is signed if the chain can take it.

        The state changes even when the ``record-stop`` event cannot be written (the disk is
        full and the reserve spent): a stop never fails half-way, leaving a recording without
        its id. The seals and the failure are logged; the chain's next event explains the gap."""
        rec = self._finish_recording()
        self._state = transition(self._state, Event.STOP)
        try:
            self._chain.event("record-stop", {"by": by}, recording_id=rec)
        except Exception as exc:
            self._last_error = f"cannot sign record-stop: {type(exc).__name__}: {exc}"
            log.error("recording %s stopped by %s, but %s", rec, by, self._last_error)
        self._persist()
        return rec

    def _finish_recording(self) -> str:
        self._release_held(force=True)
        if self._closing is not None:
            closing, self._closing = self._closing, None
            end = self._current.start_ns if self._current is not None else None
            self._seal(closing, end_ns=end)
        if self._current is not None:
            current, self._current = self._current, None
            self._seal(current)
        rec = self._recording_id or ""
        self._recording_id = None
        return rec

    def _cmd_mark(self, actor: str, note: str | None = None) -> dict[str, Any]:
        mono, utc = self._clock.monotonic_ns(), self._clock.utc_ns()
        if self._current is None:
            self._chain.event("mark", {"by": actor}, sealed_meta={"note": note} if note else None)
            return {"recording": False}
        self._mark_seq += 1
        mark_id = self._mark_seq
        self._current.marks.append({"id": mark_id, "mono_ns": mono, "utc_ns": utc, "by": actor})
        if note:
            self._current.notes.append({"id": mark_id, "note": note})
        self._apply_indicators(pulse=True)
        log.info("mark %d by %s", mark_id, actor)
        return {"recording": True, "mark": mark_id}

    def _cmd_stealth(self, actor: str, on: bool) -> dict[str, Any]:
        if on == self._stealth:
            return {"stealth": on, "changed": False}
        self._stealth = on
        self._chain.event("stealth-on" if on else "stealth-off", {"by": actor}, recording_id=self._recording_id)
        if on and self._current is not None:
            self._current.flags.add("stealth")
        self._apply_indicators()
        return {"stealth": on, "changed": True}

    def _cmd_mute(self, actor: str, on: bool) -> dict[str, Any]:
        if on == self._muted:
            return {"muted": on, "changed": False}
        self._muted = on
        self._chain.event("mute-on" if on else "mute-off", {"by": actor}, recording_id=self._recording_id)
        if on:
            for t, kind in self._track_kind.items():
                if kind == "audio":
                    self._pre.drop_track(t)
            if self._current is not None:
                self._current.flags.add("muted")
        return {"muted": on, "changed": True}

    def _cmd_sensor_fault(self, actor: str, sensor: str, error: str) -> dict[str, Any]:
        self._chain.event("sensor-fault", {"sensor": sensor, "error": error[:200]}, recording_id=self._recording_id)
        return {"sensor": sensor}

    def _cmd_sensor_recovered(self, actor: str, sensor: str) -> dict[str, Any]:
        self._chain.event("sensor-recovered", {"sensor": sensor}, recording_id=self._recording_id)
        return {"sensor": sensor}

    def _cmd_config_changed(self, actor: str, key: str, old: str, new: str, config_sha256: str) -> dict[str, Any]:
        """A setting changed over the console (the file is already saved): a signed chain event.

        Values are TOML text (canonical JSON has no floats); the change applies at the next start.
        """
        self._chain.event(
            "config-changed",
            {"key": key, "old": old, "new": new, "config_sha256": config_sha256, "by": actor},
            recording_id=self._recording_id,
        )
        return {"key": key, "config_sha256": config_sha256}

    def _cmd_storage_level(self, actor: str, level: str, free_bytes: int) -> dict[str, Any]:
        """React to the storage maintainer: warn, give up the pre-event buffer, refuse, stop.

        Never deletes anything: only the maintainer's retention frees space, and only what
        headquarters acknowledged.
        """
        old, self._storage_level = self._storage_level, level
        self._space_fault = False  # the maintainer has measured: its level says what may be written
        if level == old:
            return {"level": level, "changed": False}
        detail = {"level": level, "previous": old, "free_bytes": free_bytes}
        if level in ("full", "exhausted"):
            self._chain.event("storage-full", detail, recording_id=self._recording_id)
        elif level in ("low", "critical"):
            self._chain.event("storage-low", detail, recording_id=self._recording_id)
        else:
            self._chain.event("storage-ok", detail, recording_id=self._recording_id)
        if level in ("critical", "full", "exhausted"):
            self._pre.clear()
            log.warning("storage %s: pre-event buffer given up (%d bytes free)", level, free_bytes)
        if level == "exhausted" and self._state is State.RECORDING:
            log.error("storage exhausted: stopping the recording so its last segment seals cleanly")
            self._stop_recording("storage")
        self._apply_indicators(pulse=level in ("full", "exhausted"))
        return {"level": level, "changed": True}

    def _cmd_toggle_record(self, actor: str, trigger: str = "button") -> dict[str, Any]:
        if self._state is State.RECORDING:
            return self._cmd_stop(actor)
        return self._cmd_start(actor, trigger=trigger)

    def _cmd_toggle_stealth(self, actor: str) -> dict[str, Any]:
        return self._cmd_stealth(actor, on=not self._stealth)

    def _cmd_toggle_mute(self, actor: str) -> dict[str, Any]:
        return self._cmd_mute(actor, on=not self._muted)

    def _cmd_status(self, actor: str) -> dict[str, Any]:
        return self._snapshot()

    # -- the rest ------------------------------------------------------------------------------

    def _on_fix(self, fix: GnssFix) -> None:
        self._last_fix = fix
        if fix.utc_ns is not None and fix.mode >= FixMode.FIX_2D:
            self._chain.gnss_offset_ns = gnss_offset_ns(
                fix.utc_ns, fix.mono_ns, self._clock.utc_ns(), self._clock.monotonic_ns()
            )
        if self._current is not None and fix.mode >= FixMode.FIX_2D and fix.lat_deg is not None:
            self._current.fixes.append(
                {
                    "mono_ns": fix.mono_ns,
                    "utc_ns": fix.utc_ns,
                    "lat_e7": round(fix.lat_deg * 1e7),
                    "lon_e7": None if fix.lon_deg is None else round(fix.lon_deg * 1e7),
                    "alt_mm": None if fix.alt_m is None else round(fix.alt_m * 1000),
                    "h_acc_mm": None if fix.h_acc_m is None else round(fix.h_acc_m * 1000),
                    "mode": int(fix.mode),
                }
            )

    def _check_clock(self, now: int) -> None:
        utc = self._clock.utc_ns()
        step = self._steps.observe(now, utc)
        if step is None:
            return
        log.warning("the UTC clock stepped by %+.3f s", step / 1e9)
        q = self._clock.quality()
        self._chain.event(
            "clock-step",
            {"step_ns": step, "utc_before_ns": utc - step, "utc_after_ns": utc, "source": q.source.value},
            recording_id=self._recording_id,
        )
        for seg in (self._closing, self._current):
            if seg is not None:
                seg.flags.add("clock-unsynced")  # its UTC labels straddle a step

    def _housekeeping(self) -> None:
        now = self._clock.monotonic_ns()
        self._check_clock(now)
        if self._closing is not None and self._current is not None and now - self._current.start_ns > 2 * HOLD_MAX_NS:
            # a track that never reached its keyframe after the boundary (sensor stalled): stop waiting
            log.warning("sealing previous segment without tracks %s", set(self._track_kind) - self._current.switched)
            closing, self._closing = self._closing, None
            self._seal(closing, end_ns=self._current.start_ns)
        for seg in (self._closing, self._current):
            if seg is not None and now - seg.open.last_checkpoint_ns >= self._s.checkpoint_ns:
                try:
                    seg.open.writer.checkpoint(now)
                except (MediaError, OSError) as exc:
                    self._segment_failed(seg, exc)
                    continue
                seg.open.last_checkpoint_ns = now
                seg.durable_frames = dict(seg.frames)

    def _shutdown(self) -> None:
        try:
            if self._state is State.RECORDING:
                # the state file still says RECORDING only if we never get here: a crash resumes recording
                self._stop_recording("shutdown")
            self._state = transition(self._state, Event.SHUTDOWN)
            self._persist()
        finally:
            self._apply_indicators()
            self._publish()

    def _persist(self) -> None:
        """Save the state file (from the reserve when the disk is full). A file that cannot be
        saved is logged, never raised: the state in memory is right, and the old file at worst
        makes the next start resume a recording."""
        persisted = PersistedState(
            state=self._state,
            since_utc_ns=self._clock.utc_ns(),
            since_mono_ns=self._clock.monotonic_ns(),
            boot_id=self._chain.boot_id,
            recording_id=self._recording_id,
        )
        try:
            retry_when_full(lambda: self._state_file.save(persisted), self._make_room)
        except OSError as exc:
            self._last_error = f"cannot save the state file: {exc}"
            log.error("recorder: %s", self._last_error)

    def _apply_indicators(self, pulse: bool = False) -> None:
        ind = self._indicators
        if ind is None:
            return
        try:
            if self._stealth:
                for i in Indicator:
                    ind.set(i, Pattern.OFF)
                return
            ind.set(Indicator.RECORDING_LED, Pattern.ON if self._state is State.RECORDING else Pattern.OFF)
            alarm = self._state is State.ERROR or self._storage_level != "ok"
            ind.set(Indicator.STATUS_LED, Pattern.BLINK if alarm else Pattern.ON)
            if pulse and self._storage_level in ("full", "exhausted"):
                ind.set(Indicator.BUZZER, Pattern.PULSE)
            if pulse:
                ind.set(Indicator.HAPTIC, Pattern.PULSE)
        except Exception as exc:  # a broken LED must never stop recording
            log.warning("indicators: %s", exc)

    def _snapshot(self) -> dict[str, Any]:
        seg = self._current
        fix = self._last_fix
        quality = self._clock.quality()
        return {
            "state": self._state.value,
            "recording_id": self._recording_id,
            "stealth": self._stealth,
            "muted": self._muted,
            "storage_level": self._storage_level,
            "segment": None
            if seg is None
            else {
                "started_s_ago": round((self._clock.monotonic_ns() - seg.start_ns) / 1e9, 1),
                "marks": len(seg.marks),
                "bytes": seg.open.writer.bytes_written,
            },
            "pre_event": {"configured_s": self._s.pre_event_ns / 1e9, "buffered_packets": len(self._pre)},
            "chain": {"head_seq": self._chain.head_seq, "head": self._chain.head_hash},
            "segments_sealed": self._segments_sealed,
            "frames": dict(self._frames_total),
            "dropped": dict(self._drops_total),
            "lost_to_storage": dict(self._lost_total),
            "gnss": None
            if fix is None
            else {"mode": int(fix.mode), "lat_deg": fix.lat_deg, "lon_deg": fix.lon_deg, "h_acc_m": fix.h_acc_m},
            "time": {
                "source": quality.source.value,
                "synced": quality.synced,
                "utc_ns": self._clock.utc_ns(),
                "gnss_offset_ms": None
                if self._chain.gnss_offset_ns is None
                else round(self._chain.gnss_offset_ns / 1e6, 1),
            },
            "last_error": self._last_error,
        }

    def _publish(self) -> None:
        snap = self._snapshot()
        with self._status_lock:
            self._status = snap
