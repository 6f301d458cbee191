"""The recorder's work on its own thread: packets, commands, effects of the mode machine, time passing."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from agent.chainlog import ChainLog
from agent.fsutil import retry_when_full
from agent.media.packets import EncodedPacket, TrackSpec
from agent.prebuffer import BufferedDrops, PreEventBuffer
from agent.recorder import mode as machine
from agent.recorder.aligner import HOLD_MAX_NS, TrackAligner
from agent.recorder.inbox import Command, Drops, Message, Shutdown
from agent.recorder.mode import OPEN_FAULT_NS, CommandError, Mode, Outcome
from agent.recorder.pipeline import SegmentPipeline
from agent.recorder.settings import RecorderSettings
from agent.recorder.status import RecorderStatus, snapshot
from agent.state import PersistedState, State, StateFile
from agent.storage import StorageLevel
from agent.store import Store
from agent.timekeeping import ClockStepDetector, gnss_offset_ns
from hal.clock import Clock
from hal.gnss import FixMode, GnssFix
from hal.indicators import Indicator, Indicators, Pattern

log = logging.getLogger("agent.recorder")

PRE_EVENT_MARGIN_NS = 250_000_000


class RecorderEngine:
    """Everything the recorder does, one message at a time: route packets through the aligner
    into the pre-event buffer or the segment pipeline, run commands through the mode machine and
    carry out the effects it returns, and what time passing asks for (checkpoints, clock steps,
    faults). Not thread-safe: only the recorder thread (or a test driving ``step``) calls it.
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
        indicators: Indicators | None,
        request_keyframes: Callable[[], None],
        make_room: Callable[[], bool],
        on_space_fault: Callable[[], None],
    ) -> None:
        self._chain = chain
        self._store = store
        self._clock = clock
        self._s = settings
        # Commands other parts of the unit need run on this thread, the chain's one writer
        # (Recorder.add_command): handler(actor, **args) -> answer.
        self.extra_commands: dict[str, Callable[..., dict[str, Any]]] = {}
        # (Recorder.tap_audio): sees every audio packet with the mute state it met, on this thread.
        self.audio_taps: list[Callable[[EncodedPacket, bool], None]] = []
        self._kind = {t.name: t.kind for t in tracks}
        self._state_file = state_file
        self._indicators = indicators
        self._request_keyframes = request_keyframes
        self._make_room = make_room
        keyed = [t.name for t in tracks if t.kind == "video"]
        # the newest buffered frame trails the trigger by the capture-to-encode latency: keep a
        # little more than asked, so the recording always begins at least pre_event_s before it
        margin = PRE_EVENT_MARGIN_NS if settings.pre_event_ns else 0
        self._pre = PreEventBuffer(settings.pre_event_ns + margin, anchor, keyed)
        self._aligner = TrackAligner(anchor)
        self._pipeline = SegmentPipeline(
            chain=chain,
            clock=clock,
            tracks=tracks,
            anchor=anchor,
            segment_ns=settings.segment_ns,
            checkpoint_ns=settings.checkpoint_ns,
            segment_flags=self._segment_flags,
            on_space_fault=on_space_fault,
            on_error=self._set_error,
        )
        self.mode = Mode(media_sensors=frozenset(self._kind))
        self._last_fix: GnssFix | None = None
        self._drops_total: dict[str, int] = dict.fromkeys(self._kind, 0)
        self._frames_total: dict[str, int] = dict.fromkeys(self._kind, 0)
        self._buffered_drops = BufferedDrops(settings.pre_event_ns + 2 * HOLD_MAX_NS)
        self._steps = ClockStepDetector()
        self._last_error: str | None = None

    def power_on(self, effects: bool) -> None:
        """OFF -> READY; ``effects``: save the state file and light the indicators too."""
        out = machine.power_on(self.mode)
        if effects:
            self._apply(out)
        else:
            self.mode = out.mode

    def shutdown(self) -> None:
        self._apply(machine.shutdown(self.mode))

    def fail(self, exc: Exception) -> None:
        """A turn raised: the recorder never dies silently: remembered for the status."""
        self._set_error(f"{type(exc).__name__}: {exc}")
        log.exception("recorder: %s", self._last_error)

    def turn(self, msg: Message | None, overflow: dict[str, int]) -> None:
        """One message, then what time passing asks for."""
        match msg:
            case None:
                pass
            case EncodedPacket():
                self._on_packet(msg)
            case GnssFix():
                self._on_fix(msg)
            case Command():
                self._on_command(msg)
            case Drops(track=track, count=count, mono_ns=mono_ns):
                self._on_drops(track, count, mono_ns)
            case Shutdown():
                self.shutdown()
                return
        now = self._clock.monotonic_ns()
        for track, count in overflow.items():
            log.error("recorder: %d frame(s) of %s dropped: the inbox is full", count, track)
            self._on_drops(track, count, now)
        for p in self._aligner.release(now):
            self._route(p)
        self._housekeeping(now)

    # -- packets -------------------------------------------------------------------------------

    def _on_packet(self, p: EncodedPacket) -> None:
        self._frames_total[p.track] = self._frames_total.get(p.track, 0) + p.frames
        if p.track in self.mode.failed_sensors:  # it delivers again: no longer a failed sensor
            self._apply(machine.sensor_recovered(self.mode, p.track, signed=False))
        if self._kind.get(p.track) == "audio":
            for tap in self.audio_taps:  # judged by the same mute state as the evidence, at the same instant
                tap(p, self.mode.muted)
            if self.mode.muted:
                return
        ready = self._aligner.offer(p)
        if ready is not None:
            self._route(ready)

    def _route(self, p: EncodedPacket) -> None:
        if self.mode.recording:
            self._pipeline.route(p)
        elif self.mode.buffering and (self._kind.get(p.track) != "audio" or self._s.pre_event_audio):
            self._pre.push(p)

    def _on_drops(self, track: str, count: int, mono_ns: int) -> None:
        self._drops_total[track] = self._drops_total.get(track, 0) + count
        seg = self._pipeline.current
        if seg is not None:
            seg.dropped[track] = seg.dropped.get(track, 0) + count
        else:
            self._buffered_drops.add(mono_ns, track, count)  # the pre-event footage with the hole declares it

    # -- commands ------------------------------------------------------------------------------

    def _on_command(self, cmd: Command) -> None:
        try:
            answer = self._dispatch(cmd)
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

    def _dispatch(self, cmd: Command) -> dict[str, Any]:
        """Every command the recorder knows, by name; arguments are checked by the handlers' signatures."""
        m, actor, a = self.mode, cmd.actor, cmd.args
        match cmd.name.replace("-", "_"):
            case "start":
                return self._start(actor, **a)
            case "stop":
                return self._stop(actor, **a)
            case "toggle_record":  # the button: a trigger argument only matters when it starts
                return self._stop(actor) if m.recording else self._start(actor, **{"trigger": "button", **a})
            case "mark":
                return self._mark(actor, **a)
            case "stealth":
                return self._apply(machine.set_stealth(m, actor, **a))
            case "toggle_stealth":
                return self._apply(machine.set_stealth(m, actor, not m.stealth, **a))
            case "mute":
                return self._apply(machine.set_mute(m, actor, **a))
            case "toggle_mute":
                return self._apply(machine.set_mute(m, actor, not m.muted, **a))
            case "sensor_fault":
                return self._apply(machine.sensor_fault(m, **a))
            case "sensor_recovered":
                return self._apply(machine.sensor_recovered(m, **a))
            case "storage_level":
                return self._storage_level(**a)
            case "sync_alarm":
                return self._apply(machine.sync_alarm(m, **a))
            case "live":
                return self._apply(machine.live_changed(m, **a))
            case "config_changed":
                return self._config_changed(actor, **a)
            case "status":
                return self.snapshot().as_dict()
            case name if name in self.extra_commands:
                return self.extra_commands[name](actor, **a)
            case _:
                raise CommandError(f"unknown command {cmd.name!r}")

    def _audit(self, cmd: Command, outcome: str, **detail: Any) -> None:
        """Audit a command; a store that cannot take the record is logged, and the command is
        still answered (a caller waiting on it must never time out because the disk is full)."""
        try:
            self._store.audit(cmd.actor, cmd.name, "recorder", outcome, **detail)
        except Exception as exc:
            log.error("cannot audit %s by %s (%s): %s", cmd.name, cmd.actor, outcome, exc)

    def _start(self, actor: str, trigger: str = "ctl") -> dict[str, Any]:
        answer = self._apply(machine.start(self.mode, actor, trigger, str(uuid.uuid4())))
        log.info("RECORDING (%s by %s), pre-event %.1f s", trigger, actor, answer["pre_event_s"])
        return answer

    def _stop(self, actor: str) -> dict[str, Any]:
        answer = self._apply(machine.stop(self.mode, actor))
        log.info("READY (stopped by %s)", actor)
        return answer

    def _mark(self, actor: str, note: str | None = None) -> dict[str, Any]:
        mark_id = self._pipeline.mark(actor, note)
        if mark_id is None:
            self._chain.event("mark", {"by": actor}, sealed_meta={"note": note} if note else None)
            return {"recording": False}
        self._indicate(machine.indicator_patterns(self.mode, pulse=True))
        log.info("mark %d by %s", mark_id, actor)
        return {"recording": True, "mark": mark_id}

    def _storage_level(self, level: str, free_bytes: int) -> dict[str, Any]:
        self._pipeline.measured()  # the maintainer has measured: its level says what may be written
        return self._apply(machine.storage_level(self.mode, StorageLevel(level), free_bytes))

    def _config_changed(self, actor: str, key: str, old: str, new: str, config_sha256: str) -> dict[str, Any]:
        """A setting changed over the console (the file is already saved): a signed chain event.

        Values are TOML text (canonical JSON has no floats); the change applies at the next start.
        """
        detail = {"key": key, "old": old, "new": new, "config_sha256": config_sha256, "by": actor}
        self._sign(machine.Sign("config-changed", detail, self.mode.recording_id))
        return {"key": key, "config_sha256": config_sha256}

    # -- effects -------------------------------------------------------------------------------

    def _apply(self, out: Outcome) -> dict[str, Any]:
        """Carry out a transition of the mode machine: ``before``, the new mode, ``after``."""
        answer = dict(out.answer)
        for effect in out.before:
            answer.update(self._do(effect))
        old, self.mode = self.mode, out.mode
        if old.state is not out.mode.state and State.ERROR in (old.state, out.mode.state):
            why = machine.fault_reason(out.mode) or "recovered"
            log.error("recorder %s -> %s: %s (last error: %s)", old.state.value, out.mode.state.value, why,
                      self._last_error)
        for effect in out.after:
            answer.update(self._do(effect))
        return answer

    def _do(self, effect: machine.Effect) -> dict[str, Any]:
        match effect:
            case machine.Sign():
                self._sign(effect)
            case machine.Indicate(patterns=patterns):
                self._indicate(patterns)
            case machine.Persist():
                self._persist()
            case machine.BeginRecording():
                return self._begin(effect)
            case machine.FinishRecording():
                for p in self._aligner.release_all():
                    self._pipeline.route(p)
                self._pipeline.finish()
            case machine.DropPreEvent(reason=reason):
                self._pre.clear()
                log.warning("%s", reason)
            case machine.DropAudio():
                for track, kind in self._kind.items():
                    if kind == "audio":
                        self._pre.drop_track(track)
            case machine.FlagSegments(flag=flag):
                if self._pipeline.current is not None:
                    self._pipeline.current.flags.add(flag)
        return {}

    def _begin(self, effect: machine.BeginRecording) -> dict[str, Any]:
        start = self._pre.start_ns()
        held = self._pre.drain()
        if start is None:
            # no buffered footage: begin now; each video track from the next keyframe, asked for now
            self._request_keyframes()
            start = self._clock.monotonic_ns()
        trigger_ns = self._clock.monotonic_ns()
        seg = self._pipeline.begin(effect.recording_id, effect.trigger, start, trigger_ns)
        pre_event_ns = max(0, trigger_ns - start) if held else 0
        drops = self._buffered_drops.take_since(start)
        if seg is not None:
            for track, count in drops.items():
                seg.dropped[track] = seg.dropped.get(track, 0) + count
            for p in held:
                self._pipeline.route(p)  # through rotation: long pre-event footage is cut into segments too
        else:
            for p in held:
                self._pipeline.count_lost(p)
        return {"recording_id": effect.recording_id, "pre_event_s": round(pre_event_ns / 1e9, 3)}

    def _sign(self, sign: machine.Sign) -> None:
        try:
            self._chain.event(sign.kind, sign.detail, recording_id=sign.recording_id)
        except Exception as exc:
            if sign.required:
                raise
            self._set_error(f"cannot sign {sign.kind}: {type(exc).__name__}: {exc}")
            log.error("recorder: %s", self._last_error)

    def _indicate(self, patterns: tuple[tuple[Indicator, Pattern], ...]) -> None:
        ind = self._indicators
        if ind is None:
            return
        try:
            for indicator, pattern in patterns:
                ind.set(indicator, pattern)
        except Exception as exc:  # a broken LED must never stop recording
            log.warning("indicators: %s", exc)

    def _persist(self) -> None:
        """Save the state file (from the reserve when the disk is full). A file that cannot be
        saved is logged, never raised: the state in memory is right, and the old file at worst
        makes the next start resume a recording."""
        persisted = PersistedState(
            state=self.mode.state,
            since_utc_ns=self._clock.utc_ns(),
            since_mono_ns=self._clock.monotonic_ns(),
            boot_id=self._chain.boot_id,
            recording_id=self.mode.recording_id,
        )
        try:
            retry_when_full(lambda: self._state_file.save(persisted), self._make_room)
        except OSError as exc:
            self._set_error(f"cannot save the state file: {exc}")
            log.error("recorder: %s", self._last_error)

    # -- the rest ------------------------------------------------------------------------------

    def _segment_flags(self) -> list[str]:
        """Flags a segment opened now starts with."""
        return [flag for flag, on in (("stealth", self.mode.stealth), ("muted", self.mode.muted)) if on]

    def _set_error(self, message: str) -> None:
        self._last_error = message

    def _on_fix(self, fix: GnssFix) -> None:
        self._last_fix = fix
        if fix.utc_ns is not None and fix.mode >= FixMode.FIX_2D:
            self._chain.gnss_offset_ns = gnss_offset_ns(
                fix.utc_ns, fix.mono_ns, self._clock.utc_ns(), self._clock.monotonic_ns()
            )
        self._pipeline.add_fix(fix)

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
            recording_id=self.mode.recording_id,
        )
        for seg in self._pipeline.segments():
            seg.flags.add("clock-unsynced")  # its UTC labels straddle a step

    def _housekeeping(self, now: int) -> None:
        self._check_clock(now)
        self._pipeline.housekeeping(now)
        faulted = self._pipeline.without_segment_ns(now) >= OPEN_FAULT_NS
        if faulted != self.mode.open_fault:
            self._apply(machine.open_fault(self.mode, faulted))

    def snapshot(self) -> RecorderStatus:
        return snapshot(
            self.mode,
            self._pipeline,
            self._clock,
            frames=self._frames_total,
            dropped=self._drops_total,
            pre_event_configured_s=self._s.pre_event_ns / 1e9,
            pre_event_buffered_packets=len(self._pre),
            pre_event_buffered_s=round(self._pre.span_ns() / 1e9, 3),
            pre_event_buffered_bytes=self._pre.bytes,
            head=(self._chain.head_seq, self._chain.head_hash),
            gnss=self._last_fix,
            gnss_offset_ns=self._chain.gnss_offset_ns,
            last_error=self._last_error,
        )

