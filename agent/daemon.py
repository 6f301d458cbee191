"""``bodycam run`` and ``bodycam ctl``: the agent's life from start to clean stop, and its local client."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

from agent import __version__
from agent.chainlog import ChainLog
from agent.config import Config, ConfigError, load_config, resolve_path
from agent.console.service import EXIT_RESTART, ConsoleService, start_console
from agent.control import ControlError, ControlServer
from agent.dirlock import DirLock, DirLockError
from agent.evidence.keys import FileKeyStore, KeyFileError, generate_hq_key, load_hq_public
from agent.fserrors import explain
from agent.fsutil import free_bytes
from agent.identity import KEY_NAME, IdentityError, check_identity, require_no_evidence
from agent.provision import CONFIG_NAME, ProvisionError, provision
from agent.recorder import CommandError, Recorder, RecorderSettings
from agent.recovery import recover
from agent.reserve import RESERVE_NAME, ReserveError, SpaceReserve, no_room_message
from agent.sdnotify import Notifier
from agent.state import State, StateFile, resume_state
from agent.storage import StorageMaintainer, disk_bytes, recording_bytes_per_second, thresholds_for
from agent.store import Store, StoreError
from agent.sync.heartbeat import unit_status
from agent.sync.setup import SyncSetupError, build_sync_worker
from agent.sync.worker import SyncWorker
from agent.unit import Sensors, UnitError, build_sensors, build_workers, system_clock
from agent.workers import SensorWorker
from hal.clock import Clock
from hal.inputs import Action, Control, InputEvent

log = logging.getLogger("bodycam")

SIM_DEVICE_ID = "sim-unit-1"
HUNG_NS = 10_000_000_000  # a sensor thread inside one device call this long is replaced
REPLACE_INTERVAL_NS = 60_000_000_000  # at most one replacement per sensor per minute
DRIVERS_OPEN_WAIT_NS = 30_000_000_000  # READY=1 waits at most this long for every sensor's first open
RECORDER_STALL_NS = 10_000_000_000  # no watchdog ping once the recorder loop has not turned for this long


def kernel_boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def ensure_dev_provisioned(data_dir: Path, device_id: str) -> None:
    """With --sim on a fresh data dir: a development HQ key pair and a device identity.

    Never in a data dir that already holds evidence (``IdentityError``): a new identity there
    would sign new entries with a key the old ones were not signed with.
    """
    if (data_dir / KEY_NAME).exists():
        return
    require_no_evidence(data_dir, "creating a development identity")
    dev = data_dir / "dev-hq"
    dev.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not (dev / "hq.key").exists():
        generate_hq_key(dev / "hq.key", dev / "hq.pub")
    provision(data_dir, device_id, dev / "hq.pub", caller_holds_lock=True)
    log.warning("=" * 78)
    log.warning("DEVELOPMENT ONLY: created a headquarters key pair in %s", dev)
    log.warning("Anyone holding dev-hq/hq.key can decrypt this unit's evidence. Never use it on a real unit:")
    log.warning("provision real units with 'bodycam provision --hq-pub' and keep hq.key at headquarters.")
    log.warning("=" * 78)


def require_provisioned(data_dir: Path) -> None:
    """Without --sim: the identity must be there; say whether it is missing or was never made."""
    if (data_dir / KEY_NAME).exists():
        return
    require_no_evidence(data_dir, "provisioning it again")
    raise IdentityError(
        f"{data_dir} is not provisioned (no {KEY_NAME}): run 'bodycam provision --data-dir {data_dir}"
        " --device-id ID --hq-pub hq.pub' first, or add --sim for a development unit"
    )


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
        self.workers: list[SensorWorker] = build_workers(
            self.sensors,
            clock,
            self.recorder.post_packet,
            self.recorder.post_drops,
            self.recorder.post_fix,
            self.on_input,
            lambda sensor, err: self.recorder.post_command("sensor_fault", "agent", sensor=sensor, error=err),
            lambda sensor: self.recorder.post_command("sensor_recovered", "agent", sensor=sensor),
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
        )
        self.sync: SyncWorker | None = None
        self.sync_problem: str | None = None
        try:
            self.sync = build_sync_worker(config, data_dir, self.store, self.keystore, clock, self.heartbeat_status)
        except SyncSetupError as exc:  # recording never waits on sync: run without it, and say so
            self.sync_problem = str(exc)
            log.error("sync disabled: %s", exc)

    def heartbeat_status(self) -> dict[str, Any]:
        power: dict[str, Any] | None = None
        if self.sensors.power is not None:
            try:
                p = self.sensors.power.read()
                power = {"battery_pct": round(p.battery_pct, 1), "charging": p.charging}
            except Exception as exc:
                power = {"error": str(exc)}
        return unit_status(self.recorder.status(), self.storage.get_status(), power)

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
        for w in self.workers:
            w.start()
        sock = resolve_path(self.data_dir, self.config.control.socket)
        self.control = ControlServer(sock, self.handle_control)
        self.control.start()
        if self.sync is not None:
            self.sync.start()
        # never raises: a console that cannot start is logged and the unit records on without it
        self.console = start_console(self, self.config_path, restart=self.request_restart)
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

    def status_line(self) -> str:
        """One line for ``systemctl status``: the recording state and whatever is wrong."""
        st = self.recorder.status()
        parts = [str(st["state"]).upper()]
        if st["storage_level"] != "ok":
            parts.append(f"storage {st['storage_level']}")
        if st["stealth"]:
            parts.append("stealth")
        if st["muted"]:
            parts.append("muted")
        failed = sorted(w.sensor for w in self.workers if w.status()["state"] == "failed")
        if failed:
            parts.append("sensor fault: " + ", ".join(failed))
        return "; ".join(parts)

    def request_restart(self) -> None:
        """The console's `reboot`: stop cleanly through the main loop, then exit EXIT_RESTART so the
        service manager (Restart=on-failure) starts the agent again."""
        self.restart_requested.set()
        os.kill(os.getpid(), signal.SIGTERM)

    def handle_control(self, cmd: str, actor: str, args: dict[str, Any]) -> dict[str, Any]:
        allowed = {"start", "stop", "mark", "status", "stealth", "mute"}
        if cmd not in allowed:
            raise ControlError("unknown-command", f"unknown command {cmd!r} (known: {', '.join(sorted(allowed))})")
        if cmd == "status":
            return self.status()
        if cmd in ("stealth", "mute"):
            if not isinstance(args.get("on"), bool):
                raise ControlError("bad-request", f'{cmd} needs "on": true or false')
            args = {"on": args["on"]}
        elif cmd == "mark":
            note = args.get("note")
            args = {"note": str(note)[:500]} if note else {}
        elif cmd == "start":
            args = {"trigger": "ctl"}
        else:
            args = {}
        try:
            return self.recorder.command(cmd, actor, **args)
        except CommandError as exc:
            raise ControlError("refused", str(exc)) from exc

    def status(self) -> dict[str, Any]:
        st = self.recorder.status()
        st["device_id"] = self.config.device.id
        st["firmware"] = __version__
        st["sensors"] = {w.sensor: w.status() for w in self.workers}
        st["sync"] = (
            self.sync.get_status() if self.sync is not None else {"enabled": False, "problem": self.sync_problem}
        )
        st["storage"] = self.storage.get_status()
        st["storage"]["index"] = self.store.stats()
        try:
            if self.sensors.power is not None:
                p = self.sensors.power.read()
                st["power"] = {"battery_pct": round(p.battery_pct, 1), "charging": p.charging}
        except Exception as exc:
            st["power"] = {"error": str(exc)}
        return st

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
        if self.sync is not None:
            self.sync.stop()
        for w in self.workers:
            with contextlib.suppress(RuntimeError):  # a worker that never started
                w.stop()
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
        if self.sync is not None:
            self.sync.stop()
        for w in self.workers:
            w.stop()
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


def _remove_new_dir(data_dir: Path) -> None:
    """A start that failed in a data dir it created itself leaves nothing behind."""
    shutil.rmtree(data_dir, ignore_errors=True)


def _open_agent(args: argparse.Namespace, data_dir: Path) -> Agent:
    """Identity, config and the agent, in that order; raises what ``cmd_run`` reports in one line."""
    if args.sim:
        ensure_dev_provisioned(data_dir, args.device_id or SIM_DEVICE_ID)
    else:
        require_provisioned(data_dir)
    check_identity(data_dir, FileKeyStore(data_dir / KEY_NAME))  # before the index or the chain is touched
    config_path = args.config or data_dir / CONFIG_NAME
    config = load_config(config_path)
    if args.console:
        config = dataclasses.replace(config, console=dataclasses.replace(config.console, device=args.console))
    return Agent(data_dir, config, system_clock(), sim=args.sim, config_path=config_path)


def cmd_run(args: argparse.Namespace) -> int:
    data_dir: Path = args.data_dir
    created = not data_dir.exists()
    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        print(f"bodycam run: {explain(exc, data_dir)}", file=sys.stderr)
        return 2
    # Held until the process ends, checked before recovery reads or writes anything: a second agent
    # on one data dir would take the first for crashed, fork the chain and overwrite its files.
    lock = DirLock(data_dir, "bodycam run")
    try:
        lock.acquire()
    except DirLockError as exc:
        if created:
            _remove_new_dir(data_dir)
        print(f"bodycam run: {explain(exc, data_dir)}", file=sys.stderr)
        return 2
    try:
        agent = _open_agent(args, data_dir)
    except (ConfigError, KeyFileError, ProvisionError, UnitError, IdentityError, ReserveError) as exc:
        message = str(exc)
    except (OSError, StoreError) as exc:
        message = explain(exc, data_dir)
    else:
        message = ""
    if message:
        lock.close()
        if created:
            _remove_new_dir(data_dir)
        print(f"bodycam run: {message}", file=sys.stderr)
        return 2
    try:
        return _run_agent(agent, args, data_dir)
    finally:
        lock.close()


def _run_agent(agent: Agent, args: argparse.Namespace, data_dir: Path) -> int:
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("received %s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    notifier = Notifier.from_environ()
    notifier.status("starting: recovering the store, opening drivers")
    try:
        agent.start()
    except (OSError, StoreError) as exc:
        # nothing was recorded yet: say what is wrong in one line; the evidence is as it was
        log.debug("start failed", exc_info=True)
        print(f"bodycam run: {explain(exc, data_dir)}", file=sys.stderr)
        notifier.close()
        agent.abort()
        return 2
    pending = agent.wait_drivers_opened(DRIVERS_OPEN_WAIT_NS)
    if pending:
        log.error("still opening after %.0f s: %s", DRIVERS_OPEN_WAIT_NS / 1e9, ", ".join(pending))
    last_status = agent.status_line()
    notifier.ready(last_status)
    deadline = None if args.duration is None else agent.clock.monotonic_ns() + round(args.duration * 1e9)
    try:
        while not stop.is_set():
            if deadline is not None and agent.clock.monotonic_ns() >= deadline:
                break
            left_s = 1.0 if deadline is None else max(0.0, min(1.0, (deadline - agent.clock.monotonic_ns()) / 1e9))
            stop.wait(left_s)
            agent.supervise()
            if agent.recorder_healthy(RECORDER_STALL_NS):
                notifier.watchdog()
            line = agent.status_line()
            if line != last_status:
                notifier.status(line)
                last_status = line
    finally:
        notifier.stopping("stopping: sealing what is open")
        agent.stop()
        notifier.close()
    log.info("stopped cleanly; evidence in %s", data_dir / "segments")
    if agent.restart_requested.is_set():
        log.info("restart requested on the console: exiting %d so the service manager starts the agent again",
                 EXIT_RESTART)
        return EXIT_RESTART
    return 0
