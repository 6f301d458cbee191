"""``bodycam run``: provisioning checks, the data-dir lock, and the main loop around a running unit
(``agent.running.Agent``) from start to clean stop."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
import signal
import sys
import threading
from pathlib import Path

from agent.config import ConfigError, load_config
from agent.dirlock import DirLock, DirLockError
from agent.evidence.keys import FileKeyStore, KeyFileError, generate_hq_key
from agent.fserrors import explain
from agent.identity import KEY_NAME, IdentityError, check_identity, require_no_evidence
from agent.provision import CONFIG_NAME, ProvisionError, provision
from agent.reserve import ReserveError
from agent.running import Agent
from agent.sdnotify import Notifier
from agent.store import StoreError
from agent.unit import UnitError, system_clock

log = logging.getLogger("bodycam")

SIM_DEVICE_ID = "sim-unit-1"
EXIT_RESTART = 75  # EX_TEMPFAIL: `bodycam run` exits with it after the console's `reboot`, so systemd restarts it
DRIVERS_OPEN_WAIT_NS = 30_000_000_000  # READY=1 waits at most this long for every sensor's first open
RECORDER_STALL_NS = 10_000_000_000  # no watchdog ping once the recorder loop has not turned for this long


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
    last_status = agent.unit.status_line()
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
            line = agent.unit.status_line()
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
