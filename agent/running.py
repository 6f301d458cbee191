"""A running unit: store, chain, recorder, sensor workers, sync and the front-ends, from start to stop.

``agent.daemon`` runs one; everything outside reaches it through ``self.unit``, the unit API.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent import __version__
from agent.background.export import COMMAND as EXPORT_COMMAND
from agent.background.export import RingExporter, upload_handler
from agent.background.setup import build_background
from agent.chainlog import ChainLog
from agent.config import Config, resolve_path
from agent.console.service import ConsoleService, start_console
from agent.control import ControlServer
from agent.evidence.keys import FileKeyStore, load_hq_public
from agent.fsutil import free_bytes
from agent.live.channel import live_handlers
from agent.live.wiring import build_live
from agent.provision import CONFIG_NAME
from agent.recorder import Recorder, RecorderSettings
from agent.recovery import recover
from agent.reserve import RESERVE_NAME, ReserveError, SpaceReserve, no_room_message
from agent.state import State, StateFile, resume_state
from agent.storage import StorageMaintainer, disk_bytes, recording_bytes_per_second, thresholds_for
from agent.store import Store
from agent.sync.alarms import recorder_hooks
from agent.sync.requests import RequestChannel, RequestHandlers
from agent.sync.setup import SyncSetupError, build_request_channel, build_sync_worker
from agent.sync.worker import SyncWorker
from agent.unit import Sensors, build_sensors, build_workers
from agent.unitapi.api import UnitApi
from agent.unitapi.ctl import ctl_handler
from agent.workers import SensorWorker
from hal.clock import Clock
from hal.inputs import Action, Control, InputEvent

log = logging.getLogger("bodycam")

HUNG_NS = 10_000_000_000  # a sensor thread inside one device call this long is replaced
REPLACE_INTERVAL_NS = 60_000_000_000  # at most one replacement per sensor per minute


def kernel_boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


class Agent:
    """A running unit: store, chain, recorder, sensor workers and the control socket."""

    def __init__(self, data_dir: Path, config: Config, clock: Clock, sim: bool,
                 config_path: Path | None = None) -> None:
        self.data_dir = data_dir
        self.config = config
        self.config_path = config_path or data_dir / CONFIG_NAME  # where console changes are saved
        self.clock = clock
        self.boot_id = str(uuid.uuid4())
        # first: the room to sign events must exist before anything else writes (agent.reserve)
        self.reserve = SpaceReserve(data_dir / RESERVE_NAME)
        if not self.reserve.fill():
            raise ReserveError(no_room_message(data_dir))
        if free_bytes(data_dir) < self.reserve.step_bytes:
            # starting on a full disk: SQLite creates its WAL and index (and fails with an I/O
            # error, not "disk full", without room for them) before the first event is written
            log.warning("the file system holding %s is full: starting on the space reserve", data_dir)
            self.reserve.make_room()
        self.store = Store(data_dir / "index.sqlite", clock, make_room=self.reserve.make_room)
        self.keystore = FileKeyStore(data_dir / "device.key")
        hq_public = load_hq_public(resolve_path(data_dir, config.hq.public_key))
        self.chain = ChainLog(
            data_dir,
            signer=self.keystore,
            hq_public=hq_public,
            device_id=config.device.id,
            boot_id=self.boot_id,
            firmware=__version__,
            config_sha256=config.digest,
            store=self.store,
            clock=clock,
            chunk_bytes=config.evidence.chunk_bytes,
            make_room=self.reserve.make_room,
        )
        self.sensors: Sensors = build_sensors(config, clock, sim)
        self.state_file = StateFile(data_dir / "state.json")
        rec = config.recording
        self.recorder = Recorder(
            chain=self.chain,
            store=self.store,
            clock=clock,
            settings=RecorderSettings(
                segment_ns=round(config.evidence.segment_s * 1e9),
                pre_event_ns=round(rec.pre_event_s * 1e9),
                pre_event_audio=rec.pre_event_audio,
                checkpoint_ns=round(config.evidence.flush_interval_s * 1e9),
                firmware=__version__,
            ),
            tracks=self.sensors.tracks,
            anchor=self.sensors.anchor,
            state_file=self.state_file,
            indicators=self.sensors.indicators,
            request_keyframes=self.sensors.request_keyframes,
            make_room=self.reserve.make_room,
            on_space_fault=lambda: self.storage.space_fault(),
        )
        # live view (agent/live): its feed taps the streamed camera's sensor thread, never blocking it
        self.live = build_live(config, data_dir, self.keystore, clock,
                               [t.name for t in self.sensors.tracks if t.kind == "video"],
                               self.recorder.post_command, self._recording,
                               microphone=any(t.kind == "audio" for t in self.sensors.tracks))
        if self.live is not None and self.live.audio is not None:  # the recorder judges mute, as for evidence
            self.recorder.tap_audio(self.live.audio.offer)
        # record after the fact (agent/background): off unless [background] enabled
        self.background = build_background(config, data_dir, store=self.store, signer=self.keystore,
                                           hq_public=hq_public, boot_id=self.boot_id, firmware=__version__,
                                           clock=clock,
                                           audio_track=next((t for t in self.sensors.tracks if t.kind == "audio"),
                                                            None))
        if self.background is not None:
            exporter = RingExporter(self.background.ring, self.chain)
            self.recorder.add_command(EXPORT_COMMAND, exporter.export)
            if self.background.settings.audio:  # the recorder judges mute; the ring keeps only unmuted audio
                self.recorder.tap_audio(self.background.offer_audio)
        self.workers: list[SensorWorker] = build_workers(
            self.sensors,
            clock,
            self.recorder.post_packet,
            self.recorder.post_drops,
            self.recorder.post_fix,
            self.on_input,
            lambda sensor, err: self.recorder.post_command("sensor_fault", "agent", sensor=sensor, error=err),
            lambda sensor: self.recorder.post_command("sensor_recovered", "agent", sensor=sensor),
            taps=self._taps(),
        )
        self.control: ControlServer | None = None
        self.console: ConsoleService | None = None
        self.restart_requested = threading.Event()  # set by the console's `reboot`
        self._replaced_ns: dict[str, int] = {}
        bps = recording_bytes_per_second(config)
        self.storage = StorageMaintainer(
            data_dir,
            self.store,
            clock,
            thresholds_for(config.storage, bps, disk_bytes=disk_bytes(data_dir)),
            config.storage.keep_acknowledged_s,
            on_level=lambda old, new, free: self.recorder.post_command(
                "storage_level", "storage", level=new.value, free_bytes=free
            ),
            bytes_per_second=bps,
            reserve=self.reserve,
            ring=self.background,
        )
        # the one unit API: the console, the control socket and the heartbeat all go through it
        self.unit = UnitApi(self, config_path=self.config_path, restart=self.request_restart)
        self.sync: SyncWorker | None = None
        self.sync_problem: str | None = None
        # Requests from headquarters: one handler per kind (agent/sync/requests.py).
        self.request_handlers = RequestHandlers()
        if self.background is not None:
            self.request_handlers.register("background.upload", upload_handler(self.recorder.command, self._kick_sync))
        if self.live is not None:  # live.start / live.stop: an operator opened the unit's live panel
            for kind, handler in live_handlers(self.live.controller).items():
                self.request_handlers.register(kind, handler)
        self.requests: RequestChannel | None = None
        try:
            # alarms become signed chain events and the status LED through the recorder's inbox
            on_alarm, on_alarm_cleared = recorder_hooks(self.recorder.post_command)
            self.sync = build_sync_worker(config, data_dir, self.store, self.keystore, clock,
                                          self.unit.heartbeat_status, on_alarm=on_alarm,
                                          on_alarm_cleared=on_alarm_cleared)
            self.requests = build_request_channel(config, data_dir, self.store, self.keystore, clock,
                                                  self.request_handlers)
        except SyncSetupError as exc:  # recording never waits on sync: run without it, and say so
            self.sync_problem = str(exc)
            log.error("sync disabled: %s", exc)

    def _recording(self) -> bool:
        snap = self.recorder.typed_status()
        return snap is not None and snap.recording_id is not None

    def on_input(self, ev: InputEvent) -> None:
        if ev.action is not Action.PRESS:
            return
        cmd = {
            Control.RECORD: "toggle_record",
            Control.MARK: "mark",
            Control.SIGNAL: "start",
            Control.STEALTH: "toggle_stealth",
            Control.MUTE: "toggle_mute",
        }[ev.control]
        args: dict[str, Any] = {"trigger": "signal"} if ev.control is Control.SIGNAL else {}
        if cmd == "toggle_record":
            args["trigger"] = "button"
        self.recorder.post_command(cmd, f"input:{ev.control.value}", **args)

    def start(self) -> None:
        loaded = self.state_file.load()
        if loaded.problem:
            log.error("state file ignored: %s", loaded.problem)
        _, resume = resume_state(loaded.persisted, kernel_boot_id())
        previous = loaded.persisted.state if loaded.persisted else None
        # recovery comes first: salvaged segments belong to the previous boot's part of the chain
        report = recover(self.data_dir, self.chain, self.store)
        self.chain.event("boot", {"firmware": __version__, "previous_state": previous.value if previous else None})
        unclean = previous is not None and previous is not State.OFF
        if unclean or report.anything:
            detail = report.as_detail()
            detail["previous_state"] = previous.value if previous else None
            self.chain.event("recovered-after-power-loss", detail)
            log.warning(
                "the previous run did not stop cleanly (%s): recovered %d segment(s), quarantined %d file(s)",
                previous.value if previous else "no state",
                len(report.recovered) + len(report.completed),
                len(report.quarantined),
            )
        self.store.audit("agent", "boot", self.config.device.id, "ok", boot_id=self.boot_id, resume=resume)
        if self.sensors.indicators is not None:
            self.sensors.indicators.open()
        if self.sensors.power is not None:
            self.sensors.power.open()
        self.storage.start()  # before the recorder: a full disk is known before any recording starts
        self.recorder.start(resume_recording=resume)
        if self.background is not None:
            self.background.start()
        for w in self.workers:
            w.start()
        sock = resolve_path(self.data_dir, self.config.control.socket)
        self.control = ControlServer(sock, ctl_handler(self.unit, os.geteuid(), self.clock.monotonic_ns))
        self.control.start()
        if self.sync is not None:
            self.sync.start()
        if self.live is not None:
            self.live.controller.start()
        if self.requests is not None:
            self.requests.start()
        # never raises: a console that cannot start is logged and the unit records on without it
        self.console = start_console(self.unit)
        log.info(
            "READY: %s, tracks %s, pre-event %.0f s, control socket %s",
            self.config.device.id,
            ", ".join(t.name for t in self.sensors.tracks),
            self.config.recording.pre_event_s,
            sock,
        )

    def wait_drivers_opened(self, timeout_ns: int) -> list[str]:
        """Wait until every sensor has tried its first open (running or failed, retrying with backoff);
        return the sensors still inside their first open when ``timeout_ns`` ran out."""
        deadline = self.clock.monotonic_ns() + timeout_ns
        pause = threading.Event()
        while True:
            pending = [w.sensor for w in self.workers if w.status()["state"] == "starting"]
            if not pending or self.clock.monotonic_ns() >= deadline:
                return pending
            pause.wait(0.05)

    def recorder_healthy(self, stall_ns: int) -> bool:
        """The recorder thread is alive and its loop turned within ``stall_ns``: the watchdog may be fed."""
        return self.recorder.alive and self.clock.monotonic_ns() - self.recorder.last_beat_ns < stall_ns

    def _taps(self) -> dict[str, Callable[[Any], None]]:
        """What also sees a camera's frames, on its sensor thread: live view's feed and the
        background recording's ``offer`` (both only queue a reference; neither blocks)."""
        wanted: dict[str, list[Callable[[Any], None]]] = {}
        if self.live is not None:
            wanted.setdefault(self.live.camera, []).append(self.live.feed.offer)
        if self.background is not None:
            wanted.setdefault(self.background.settings.camera, []).append(self.background.offer)
        return {camera: fns[0] if len(fns) == 1 else _both(fns) for camera, fns in wanted.items()}

    def _kick_sync(self) -> None:
        if self.sync is not None:
            self.sync.kick()

    def request_restart(self) -> None:
        """The console's `reboot`: stop cleanly through the main loop, then exit EXIT_RESTART so the
        service manager (Restart=on-failure) starts the agent again."""
        self.restart_requested.set()
        os.kill(os.getpid(), signal.SIGTERM)

    def supervise(self) -> None:
        """From the main loop: replace any sensor thread stuck inside its device (rate-limited)."""
        now = self.clock.monotonic_ns()
        for i, w in enumerate(self.workers):
            if w.abandoned or w.stuck_for_ns() < HUNG_NS:
                continue
            last = self._replaced_ns.get(w.sensor)
            if last is not None and now - last < REPLACE_INTERVAL_NS:
                continue
            self._replaced_ns[w.sensor] = now
            msg = f"hung inside its driver for {w.stuck_for_ns() / 1e9:.0f} s; replaced with a fresh device"
            log.error("%s %s", w.sensor, msg)
            w.abandon()
            self.recorder.post_command("sensor_fault", "agent", sensor=w.sensor, error=msg)
            try:
                device = self.sensors.factories[w.sensor]()
            except Exception as exc:
                log.error("%s: cannot create a fresh device: %s", w.sensor, exc)
                continue
            fresh = SensorWorker(
                w.sensor, device, w.handle, self.clock, w.on_fault, w.on_recovered, stall_s=w.stall_s
            )
            self.workers[i] = fresh
            fresh.start()

    def abort(self) -> None:
        """After a failed ``start``: stop whatever did start, sign nothing more, close the store."""
        for closer in (self.console, self.control):
            if closer is not None:
                closer.close()
        if self.requests is not None:
            self.requests.stop()
        if self.sync is not None:
            self.sync.stop()
        if self.live is not None:
            self.live.controller.stop()
        for w in self.workers:
            with contextlib.suppress(RuntimeError):  # a worker that never started
                w.stop()
        if self.background is not None:
            self.background.stop()
        if self.recorder.alive:
            self.recorder.stop()
        self.storage.stop()
        self.store.close()

    def stop(self) -> None:
        log.info("stopping: sealing what is open")
        if self.console is not None:
            self.console.close()
        if self.control is not None:
            self.control.close()
        if self.requests is not None:
            self.requests.stop()
        if self.sync is not None:
            self.sync.stop()
        if self.live is not None:
            self.live.controller.stop()  # signs live-stop while the recorder still runs
        for w in self.workers:
            w.stop()
        if self.background is not None:
            self.background.stop()  # seals its open ring segment
        for enc in self.sensors.encoders.values():
            try:
                for packet in enc.flush():
                    self.recorder.post_packet(packet)
            except Exception as exc:
                log.warning("flushing encoder %s: %s", enc.track, exc)
        self.recorder.stop()
        self.storage.stop()
        if self.recorder.alive:
            # the chain belongs to the recorder thread; writing beside it could fork the chain
            log.error("the recorder did not finish sealing in time; no shutdown event is written")
        else:
            try:
                self.chain.event("shutdown", {"reason": "stop requested"})
            except Exception as exc:  # the reserve is spent: the next boot's events explain the gap
                log.error("cannot sign the shutdown event: %s", exc)
        try:
            self.store.audit("agent", "shutdown", self.config.device.id, "ok")
        except Exception as exc:
            log.error("cannot audit the shutdown: %s", exc)
        for dev in (self.sensors.indicators, self.sensors.power):
            if dev is not None:
                dev.close()
        for enc in self.sensors.encoders.values():
            enc.close()
        self.store.close()


def _both(taps: list[Callable[[Any], None]]) -> Callable[[Any], None]:
    def tap(item: Any) -> None:
        for each in taps:
            each(item)

    return tap
