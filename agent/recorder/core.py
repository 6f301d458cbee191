"""The recorder: one thread that owns the pre-event buffer, the open segments and the chain.

Sensor threads encode and post packets; buttons, the control socket and the console post
commands. Everything that touches evidence happens on this one thread, in arrival order,
so there are no locks around the chain, the muxers or the mode. ``get_status()`` is the
only call that reads from another thread; it returns a snapshot taken under a small lock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from agent.chainlog import ChainLog
from agent.fsutil import no_room
from agent.media.packets import EncodedPacket, TrackSpec
from agent.recorder.engine import RecorderEngine
from agent.recorder.inbox import Command, Drops, Inbox, Message, Shutdown
from agent.recorder.settings import RecorderSettings
from agent.recorder.status import RecorderStatus
from agent.state import State, StateFile
from agent.store import Store
from hal.clock import Clock
from hal.gnss import GnssFix
from hal.indicators import Indicators

log = logging.getLogger("agent.recorder")

PUBLISH_INTERVAL_NS = 100_000_000


class Recorder:
    """Owns the evidence path. Thread contract: ``post_*``, ``command`` and ``get_status`` from
    any thread; everything else runs on the recorder's own thread, started by ``start``.

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
        self._clock = clock
        self._tick_s = min(0.25, settings.checkpoint_ns / 4e9)
        self._engine = RecorderEngine(
            chain=chain,
            store=store,
            clock=clock,
            settings=settings,
            tracks=tracks,
            anchor=anchor,
            state_file=state_file,
            indicators=indicators,
            request_keyframes=request_keyframes,
            make_room=make_room,
            on_space_fault=on_space_fault,
        )
        self._inbox = Inbox()
        self._beat_ns = 0  # monotonic time the loop last turned; read unlocked (an int store is atomic)
        self._published_ns = 0
        self._status: RecorderStatus | None = None
        self._status_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)

    # -- called from other threads ---------------------------------------------------------------

    def post_packet(self, packet: EncodedPacket) -> None:
        self._inbox.put(packet)

    def post_fix(self, fix: GnssFix) -> None:
        self._inbox.put(fix)

    def post_drops(self, track: str, count: int, mono_ns: int) -> None:
        """``count`` frames (samples for audio) of ``track`` were lost by the sensor before ``mono_ns``."""
        self._inbox.put(Drops(track, count, mono_ns))

    def command(self, name: str, actor: str, timeout_s: float | None = 10.0, **args: Any) -> dict[str, Any]:
        """Run a command on the recorder thread and wait for its answer; raises CommandError."""
        cmd = Command(name, args, actor)
        self._inbox.put(cmd)
        return cmd.reply.result(timeout=timeout_s)

    def post_command(self, name: str, actor: str, **args: Any) -> None:
        """Queue a command without waiting for its answer (from sensor threads and callbacks)."""
        self._inbox.put(Command(name, args, actor))

    def add_command(self, name: str, handler: Callable[..., dict[str, Any]]) -> None:
        """Before ``start``: a command run on the recorder thread, the chain's one writer
        (``handler(actor, **args)`` returns the answer; it is audited like every command)."""
        if self._thread.is_alive() or name.replace("-", "_") in self._engine.extra_commands:
            raise RuntimeError(f"command {name!r}: added twice, or after start")
        self._engine.extra_commands[name.replace("-", "_")] = handler

    def tap_audio(self, tap: Callable[[EncodedPacket, bool], None]) -> None:
        """Before ``start``: ``tap(packet, muted)`` sees every audio packet on the recorder thread,
        with the mute state the recording judged it by (the background recording keeps what is not
        muted). It must not block."""
        if self._thread.is_alive():
            raise RuntimeError("audio tap added after start")
        self._engine.audio_taps.append(tap)

    def typed_status(self) -> RecorderStatus | None:
        """The last published snapshot (None before ``start`` or the first ``step``)."""
        with self._status_lock:
            return self._status

    def get_status(self) -> dict[str, Any]:
        snap = self.typed_status()
        return {} if snap is None else snap.as_dict()

    status = get_status  # the round-one name, kept while callers move to get_status()

    def start(self, resume_recording: bool) -> None:
        self._engine.power_on(effects=True)
        self._publish()
        self._thread.start()
        if resume_recording:
            self._inbox.put(Command("start", {"trigger": "resume"}, "agent"))

    def stop(self, timeout_s: float = 30.0) -> None:
        """Seal what is open, write nothing more, and end the thread."""
        self._inbox.put(Shutdown())
        self._thread.join(timeout_s)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def last_beat_ns(self) -> int:
        """Monotonic time the recorder thread last went round its loop (0 before it started)."""
        return self._beat_ns

    # -- driven synchronously (tests, replay tools) ----------------------------------------------

    def step(self, msg: Message | tuple[Any, ...] | None) -> None:
        """Handle one message on the caller's thread, as the recorder thread would.

        For tests and replay tools that drive the recorder synchronously; never call it while
        the thread started by ``start`` is running. The round-one tuples are still taken:
        ``("drops", track, count, mono_ns)`` and ``("shutdown",)``.
        """
        match msg:
            case ("shutdown",):
                msg = Shutdown()
            case ("drops", str(track), int(count), int(mono_ns)):
                msg = Drops(track, count, mono_ns)
            case tuple():
                raise TypeError(f"not a recorder message: {msg!r}")
        if self._thread.is_alive():
            raise RuntimeError("step() while the recorder thread runs")
        if self._engine.mode.state is State.OFF:
            self._engine.power_on(effects=False)
        self._engine.turn(msg, self._inbox.take_overflow())
        self._publish()

    def step_command(self, name: str, actor: str = "test", **args: Any) -> dict[str, Any]:
        """``command`` for synchronous drivers (see ``step``)."""
        cmd = Command(name, args, actor)
        self.step(cmd)
        return cmd.reply.result(timeout=0)

    def step_shutdown(self) -> None:
        if self._thread.is_alive():
            raise RuntimeError("step_shutdown() while the recorder thread runs")
        self._shutdown()

    # -- the recorder thread ---------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._beat_ns = self._clock.monotonic_ns()
            msg = self._inbox.get(self._tick_s)
            if isinstance(msg, Shutdown):
                try:
                    self._shutdown()
                except Exception:  # the thread ends regardless: stop() must never wait on a loop
                    log.exception("recorder: shutting down")
                return
            try:
                self._engine.turn(msg, self._inbox.take_overflow())
            except Exception as exc:  # the recorder never dies silently: log, count, carry on
                self._engine.fail(exc)
            # packets arrive ~100 times a second: the status snapshot is refreshed at most every
            # PUBLISH_INTERVAL_NS for them, and at once after anything else (commands, ticks)
            now = self._clock.monotonic_ns()
            if not isinstance(msg, EncodedPacket) or now - self._published_ns >= PUBLISH_INTERVAL_NS:
                self._published_ns = now
                self._publish()

    def _shutdown(self) -> None:
        try:
            self._engine.shutdown()
        finally:
            self._publish()

    def _publish(self) -> None:
        snap = self._engine.snapshot()
        with self._status_lock:
            self._status = snap
