"""`make run`: a simulated unit records a scripted incident and syncs it to a local headquarters.

About 75 seconds once the venv exists (the estimate is printed at the start). Headquarters
(`bodycam-hq serve`) starts on 127.0.0.1 with its own keys and CA; the unit is provisioned
against it and enrolled; the agent boots on simulated sensors and fills its pre-event buffer
(progress is printed every few seconds); the record button is pressed (the 30 s pre-event buffer
becomes the start of the recording), two marks are made, the button is pressed again; the unit
uploads everything over TLS and gets a signed receipt per entry, then stops. Finally headquarters
exports the device's evidence afresh into DATA/export, the evidence is verified on the unit and
in that export, and the exact commands are printed.

When standard input is a terminal (or with ``--stay yes``), headquarters and the unit then keep
running: the unit is started again (heartbeats every 10 s, its simulated GNSS moving), and the demo
prints the operations room's URL and a one-time sign-in link for a demo admin (``demo-admin``, every
role), until Ctrl-C; the incident's recording plays on its Evidence page (``bodycam-hq decryptd``,
started beside headquarters, decrypts it). Otherwise (``--stay no``, or stdin not a terminal: tests, CI) it stops there.

Ctrl-C before that stops the unit cleanly (it seals what it recorded) and then headquarters, prints
one line saying where things stand, and exits 130. Running it again resumes: keys, identity and enrolment
are kept, and whatever the unit had not uploaded yet goes up first.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import json
import re
import shutil
import signal
import subprocess
import sys
import time
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agent.config import SensorConfig, load_config, render_config
from agent.control import request
from agent.store import Store, StoreError
from drivers.sim_inputs import parse_script
from drivers.system_clock import SystemClock

# seconds after start: button (start), mark, mark, button (stop)
INCIDENT = "35:record,42:mark,50:mark,58:record"
DEVICE_ID = "demo-unit-1"
# Seconds beyond the script's last press, measured on a loaded 2-core machine: headquarters and
# provisioning ~3 s, agent start ~2 s, last upload and clean stop ~3 s, export and two verifies ~6 s.
OVERHEAD_S = 15
PROGRESS_EVERY_S = 5.0
EXIT_INTERRUPTED = 130
PR_SET_PDEATHSIG = 1
DEMO_ADMIN = "demo-admin"
LINK_TTL_S = 900


class Interrupted(Exception):
    """Ctrl-C arrived; the demo stops what it started and says where things stand."""


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the demo dies, so no agent or server outlives a killed demo."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """A child in its own process group: the terminal's Ctrl-C reaches the demo only, which stops
    the children in order (the unit first, so it seals what it recorded, then headquarters)."""
    return subprocess.Popen(list(argv), process_group=0, preexec_fn=_die_with_parent, **kwargs)


def step(argv: Sequence[str], *, echo: bool = True) -> int:
    """Run one short command (keygen, provision, enrol, export...) to the end, printing its output
    (with ``echo=False`` only if it fails).

    A Ctrl-C meanwhile lets it finish (it takes a second), so no half-written key or config is left.
    """
    proc = spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = proc.communicate()
    if echo or proc.returncode:
        sys.stdout.write(out.decode(errors="replace"))
        sys.stdout.flush()
    return proc.returncode


def say(text: str) -> None:
    print(text, flush=True)


# ---- pure: the script's timeline and the progress lines ----------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Timeline:
    """When the scripted buttons are pressed, in seconds after the unit starts."""

    presses: tuple[tuple[float, str], ...]

    @classmethod
    def parse(cls, script: str) -> Timeline:
        return cls(tuple((at_s, control.value) for at_s, control, _ in parse_script(script)))

    @property
    def last_s(self) -> float:
        return max((at for at, _ in self.presses), default=0.0)

    def next_press(self, elapsed_s: float) -> tuple[float, str] | None:
        return next(((at, what) for at, what in self.presses if at > elapsed_s), None)


def estimate_s(timeline: Timeline) -> int:
    """Seconds the demo takes from its start to the last line, rounded up to 5."""
    total = timeline.last_s + OVERHEAD_S
    return int(-(-total // 5) * 5)


def progress_line(elapsed_s: float, status: Mapping[str, Any] | None, unsent: int | None, timeline: Timeline) -> str:
    """One line saying what the unit is doing now, for the demo's periodic progress.

    ``status`` is the agent's ``ctl status`` (None: not answering yet); ``unsent`` the entries it
    sealed that headquarters has not acknowledged (None: unknown).
    """
    head = f"  [{elapsed_s:4.0f} s]"
    if status is None:
        return f"{head} the unit is starting: opening its simulated sensors"
    upload = f"; {unsent} entr{'y' if unsent == 1 else 'ies'} waiting to upload" if unsent else ""
    nxt = timeline.next_press(elapsed_s)
    coming = f"; next: {nxt[1]} button at {nxt[0]:.0f} s" if nxt else ""
    if status.get("state") == "recording":
        sealed = status.get("segments_sealed", 0)
        segment = status.get("segment") or {}
        current = f", the current one open for {segment['started_s_ago']:.0f} s" if "started_s_ago" in segment else ""
        return f"{head} recording: {sealed} segment{'' if sealed == 1 else 's'} sealed{current}{upload}{coming}"
    if status.get("state") == "ready":
        if status.get("segments_sealed", 0) or timeline.next_press(elapsed_s) is None:
            return f"{head} stopped recording{upload or '; everything is at headquarters'}{coming}"
        configured = float(status.get("pre_event", {}).get("configured_s", 0.0))
        held = min(elapsed_s, configured)
        return (
            f"{head} ready, not recording: pre-event buffer {held:.0f} of {configured:.0f} s "
            f"(in memory; it becomes the start of the recording){coming}"
        )
    return f"{head} the unit is {status.get('state')}{upload}{coming}"


def stays(choice: str, stdin_is_tty: bool) -> bool:
    """Whether headquarters and the unit keep running after the incident (``--stay auto|yes|no``)."""
    return choice == "yes" or (choice == "auto" and stdin_is_tty)


def finished(elapsed_s: float, status: Mapping[str, Any] | None, unsent: int | None, timeline: Timeline) -> bool:
    """The script is played, the unit is not recording and headquarters acknowledged all it sealed."""
    if status is None or elapsed_s < timeline.last_s + 1.0:
        return False
    return status.get("state") != "recording" and unsent == 0


# ---- the demo -----------------------------------------------------------------------------------


class Demo:
    """One run: headquarters, the unit, the report. Owns the processes it starts and stops them in order."""

    def __init__(self, args: argparse.Namespace, timeline: Timeline) -> None:
        self.args = args
        self.timeline = timeline
        bindir = Path(sys.executable).parent
        self.bodycam, self.bodycam_hq = str(bindir / "bodycam"), str(bindir / "bodycam-hq")
        self.root: Path = args.data_dir
        self.unit, self.hq = self.root / "unit", self.root / "hq"
        self.export = self.root / "export"
        self.interrupted = False  # set by the SIGINT handler: a plain flag is safe there
        self.url = ""
        self.server: subprocess.Popen[bytes] | None = None
        self.decryptd: subprocess.Popen[bytes] | None = None  # playback's only holder of hq.key
        self.agent: subprocess.Popen[bytes] | None = None
        self.phase = "while setting up"

    def on_sigint(self, _signum: int, _frame: object) -> None:
        if not self.interrupted:
            print("\nCtrl-C: stopping cleanly (the unit seals what it recorded)...", file=sys.stderr, flush=True)
        self.interrupted = True

    def check(self) -> None:
        if self.interrupted:
            raise Interrupted

    def run(self) -> int:
        say(
            f"bodycam demo: about {estimate_s(self.timeline)} s from here. Data in {self.root}/; "
            "Ctrl-C stops it cleanly and `make run` again resumes."
        )
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            code = self.start_hq()
            if code == 0:
                self.check()
                code = self.provision()
            if code == 0:
                self.check()
                code = self.record()
            if code == 0:
                self.check()
                code = self.report()
            self.check()  # a Ctrl-C during the report: it was let finish, but say so
            if code == 0 and stays(self.args.stay, sys.stdin.isatty()):
                code = self.stay_up()
        except Interrupted:
            self.stop_all()
            say(self.interrupted_line())
            return EXIT_INTERRUPTED
        finally:
            self.stop_all()
        return code

    def start_hq(self) -> int:
        say("\n== headquarters: keys, CA and the sync service on 127.0.0.1 ==\n")
        if not (self.hq / "keys" / "hq.key").exists():
            code = step([self.bodycam_hq, "keygen", "--data-dir", str(self.hq)])
            if code:
                return code
        self.check()
        socket = self.root / "decrypt" / "decryptd.sock"
        with (self.root / "decryptd.log").open("ab") as decrypt_log:
            self.decryptd = spawn([self.bodycam_hq, "decryptd", "--hq-key", str(self.hq / "keys" / "hq.key"),
                                   "--socket", str(socket)], stdout=decrypt_log, stderr=subprocess.STDOUT)
        with (self.root / "hq.log").open("ab") as hq_log:
            self.server = spawn(
                [self.bodycam_hq, "serve", "--data-dir", str(self.hq), "--listen", "127.0.0.1:0",
                 "--decryptd-socket", str(socket)],
                stdout=subprocess.PIPE,
                stderr=hq_log,
            )
        assert self.server.stdout is not None
        line = self.server.stdout.readline().decode()
        m = re.search(r"https://127\.0\.0\.1:(\d+)", line)
        if m is None:
            print(f"headquarters did not start: {line.strip()!r} (see {self.root / 'hq.log'})", file=sys.stderr)
            return 1
        self.url = m.group(0)
        say(line.strip())
        return 0

    def provision(self) -> int:
        if not (self.unit / "bodycam.toml").exists():
            say("\n== the unit: identity key, headquarters' public keys and CA ==\n")
            keys = self.hq / "keys"
            argv = [self.bodycam, "provision", "--data-dir", str(self.unit), "--device-id", DEVICE_ID,
                    "--hq-pub", str(keys / "hq.pub"), "--hq-url", self.url, "--hq-ca", str(keys / "ca.pem")]
            if (self.unit / "device.key").exists():
                argv.append("--force")  # a provisioning cut short: a key without a config (and no evidence)
            code = step(argv)
            if code:
                return code
            self.check()
        say("\n== enrolment: headquarters accepts the unit's public key ==\n")
        # Every run: enrolling the same key again is a no-op, and it repairs a run cut short here.
        return step([self.bodycam_hq, "enroll", "--data-dir", str(self.hq), "--device-id", DEVICE_ID,
                     "--device-pub", str(self.unit / "device.pub")])

    def record(self) -> int:
        config = load_config(self.unit / "bodycam.toml")
        inputs = SensorConfig(driver="sim", enabled=True, options=types.MappingProxyType({"script": self.args.script}))
        demo = dataclasses.replace(
            config,
            hq=dataclasses.replace(config.hq, url=self.url),  # this run's port
            inputs=inputs,
            sync=dataclasses.replace(config.sync, interval_s=2.0, heartbeat_s=10.0),
        )
        demo_cfg = self.unit / "demo.toml"
        demo_cfg.write_text(render_config(demo))

        say(f"\n== the unit records a scripted incident ({self.args.script}) and syncs it ==\n")
        self.phase = "while recording"
        # --duration caps the run should the demo lose track of it; normally the demo stops the unit
        # as soon as the script is played and headquarters holds everything.
        cap_s = self.timeline.last_s + 60
        self.agent = spawn([self.bodycam, "run", "--sim", "--data-dir", str(self.unit), "--config", str(demo_cfg),
                            "--duration", str(cap_s)])
        self.watch(self.agent)
        self.phase = "after recording"
        code = self.stop_agent()
        if code != 0:
            print(f"\nthe agent exited with {code} (its log is above)", file=sys.stderr)
        return code

    def watch(self, agent: subprocess.Popen[bytes]) -> None:
        """Print progress every few seconds until the incident is recorded and uploaded (or the agent ends).

        Times count from when the unit first answers, which is when its scripted buttons start.
        """
        t0 = time.monotonic()
        ready_at: float | None = None
        next_print = PROGRESS_EVERY_S
        sock = self.unit / "ctl.sock"
        while agent.poll() is None:
            self.check()
            status = self.status(sock)
            now = time.monotonic()
            if status is not None and ready_at is None:
                ready_at = now
                next_print = PROGRESS_EVERY_S
            elapsed = now - (t0 if ready_at is None else ready_at)
            counts = self.unsent() if status is not None else None  # the agent has made its index by then
            unsent = None if counts is None else counts[1]
            if finished(elapsed, status, unsent, self.timeline):
                say(f"  [{elapsed:4.0f} s] incident recorded, headquarters holds every entry: stopping the unit")
                return
            if elapsed >= next_print:
                say(progress_line(elapsed, status, unsent, self.timeline))
                next_print += PROGRESS_EVERY_S
            time.sleep(0.5)

    @staticmethod
    def status(sock: Path) -> dict[str, Any] | None:
        try:
            reply = request(sock, "status")
        except (OSError, ValueError):
            return None  # not listening yet, or going away
        data: dict[str, Any] | None = reply.get("data") if reply.get("ok") else None
        return data

    def stop_agent(self) -> int:
        agent, self.agent = self.agent, None
        if agent is None:
            return 0
        if agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
        try:
            return agent.wait(60)
        except subprocess.TimeoutExpired:
            agent.kill()  # recovery on the next start salvages what it had open
            return agent.wait()

    def stop_all(self) -> None:
        self.stop_agent()
        for name in ("server", "decryptd"):
            proc = getattr(self, name)
            setattr(self, name, None)
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def unsent(self) -> tuple[int, int] | None:
        """(entries on the unit, of which not acknowledged by headquarters), or None if unknown.

        Reads the unit's index beside the running agent (SQLite WAL: readers never block its writes).
        """
        index = self.unit / "index.sqlite"
        if not index.exists():
            return None
        try:
            with Store(index, SystemClock()) as store:
                entries = store.segments()
        except StoreError:
            return None
        return len(entries), sum(1 for e in entries if e.state != "acknowledged")

    def interrupted_line(self) -> str:
        """Where things stand after Ctrl-C, in one line."""
        counts = self.unsent()
        if counts is None:
            state = "interrupted before the unit recorded anything; headquarters is stopped"
        else:
            total, waiting = counts
            state = (
                f"interrupted {self.phase}: the unit is stopped with {total} sealed entries in "
                f"{self.unit / 'segments'} ({waiting} not yet at headquarters: they upload first next time); "
                "headquarters is stopped"
            )
        return f"{state}. Re-run `make run` to resume."

    def report(self) -> int:
        bodycam, bodycam_hq, unit, hq, export = self.bodycam, self.bodycam_hq, self.unit, self.hq, self.export
        say("\n== what headquarters received ==\n")
        step([bodycam_hq, "evidence", "list", "--data-dir", str(hq), "--device", DEVICE_ID])
        code = self.export_afresh()
        if code:
            return code

        say("\n== verifying, with public keys only: on the unit, then headquarters' export ==\n")
        on_unit = step([bodycam, "verify", str(unit), "--device-pub", str(unit / "device.pub")])
        exported = step([bodycam, "verify", str(export), "--device-pub", str(export / "device.pub")])
        hq_key = hq / "keys" / "hq.key"
        say(
            f"""
== done ==
On the unit:   {unit / "segments"} (encrypted to headquarters' key, signed, hash-chained)
At HQ:         {hq / "evidence" / DEVICE_ID}
Export for a court (made afresh by this run, every entry headquarters holds for {DEVICE_ID}): {export}
Verify (public keys only, what a court runs):
  {bodycam} verify {export} --device-pub {export / "device.pub"}
  {bodycam} verify {unit} --device-pub {unit / "device.pub"}
Verify and decrypt the content too (headquarters' private key):
  {bodycam} verify {export} --device-pub {export / "device.pub"} --hq-key {hq_key}
Decrypt to playable Matroska files and JSON manifests:
  {bodycam_hq} decrypt {export}/*.bcs --key {hq_key} --out {self.root / "decrypted"}
The unit's own view:  {bodycam} ctl --data-dir {unit} status   (while it runs)
"""
        )
        return on_unit or exported

    def stay_up(self) -> int:
        """Keep headquarters and a running unit up for the operations room until Ctrl-C."""
        self.phase = "while staying up"
        code = self.demo_admin()
        if code:
            return code
        link = subprocess.run([self.bodycam_hq, "user", "link", DEMO_ADMIN, "--data-dir", str(self.hq),
                               "--url", self.url, "--ttl-s", str(LINK_TTL_S)], capture_output=True, text=True,
                              check=False)
        if link.returncode:
            print(f"could not make a sign-in link: {link.stderr.strip()}", file=sys.stderr)
            return link.returncode
        config = load_config(self.unit / "bodycam.toml")
        live = dataclasses.replace(config, hq=dataclasses.replace(config.hq, url=self.url),
                                   sync=dataclasses.replace(config.sync, interval_s=2.0, heartbeat_s=10.0))
        live_cfg = self.unit / "demo-live.toml"
        live_cfg.write_text(render_config(live))
        with (self.root / "unit.log").open("ab") as unit_log:  # the instructions stay on screen
            self.agent = spawn([self.bodycam, "run", "--sim", "--data-dir", str(self.unit), "--config", str(live_cfg)],
                               stdout=unit_log, stderr=subprocess.STDOUT)
        say(
            f"""
== the operations room: headquarters and the unit keep running until Ctrl-C ==
Open      {self.url}/ops/
Sign in   {link.stdout.strip()}
          (once, within {LINK_TTL_S // 60} minutes, as {DEMO_ADMIN}: admin, supervisor, operator and auditor)
The browser will not know headquarters' own CA: accept the warning for this loopback demo, or
import {self.hq / "keys" / "ca.pem"}. Another link:
  {self.bodycam_hq} user link {DEMO_ADMIN} --data-dir {self.hq} --url {self.url}
Evidence  the incident's recording plays there, decrypted by bodycam-hq decryptd (its log:
          {self.root / "decryptd.log"}), the only process that holds hq.key.
The unit ({DEVICE_ID}) sends a heartbeat every 10 s (its log: {self.root / "unit.log"});
`{self.bodycam} ctl --data-dir {self.unit} status` shows it.
"""
        )
        while not self.interrupted:
            for name, proc in (("the unit", self.agent), ("headquarters", self.server)):
                if proc is not None and proc.poll() is not None:
                    print(f"{name} stopped on its own (exit {proc.returncode}); see {self.root / 'unit.log'} "
                          f"and {self.root / 'hq.log'}", file=sys.stderr)
                    return 1
            time.sleep(0.5)
        self.stop_all()
        say("stopped the unit (it sealed what it had open) and headquarters. `make run` again starts both.")
        return 0

    def demo_admin(self) -> int:
        """The demo's admin account, made once per data dir; its password and TOTP secret are not shown
        (the one-time links are the demo's way in)."""
        listed = subprocess.run([self.bodycam_hq, "user", "list", "--json", "--data-dir", str(self.hq)],
                                capture_output=True, text=True, check=False)
        if listed.returncode == 0 and any(u.get("name") == DEMO_ADMIN for u in json.loads(listed.stdout or "[]")):
            return 0
        roles = [arg for role in ("admin", "supervisor", "operator", "auditor") for arg in ("--role", role)]
        made = subprocess.run([self.bodycam_hq, "user", "add", DEMO_ADMIN, *roles, "--json", "--data-dir",
                               str(self.hq)], capture_output=True, text=True, check=False)
        if made.returncode:
            print(f"could not make the demo admin: {made.stderr.strip()}", file=sys.stderr)
        return made.returncode

    def export_afresh(self) -> int:
        """Export into a new folder, then put it in place of the last run's export.

        Headquarters keeps every entry it received, so the new export holds everything the old one
        did and this run's entries too: replacing the old folder loses nothing.
        """
        fresh = self.root / "export.new"
        if fresh.exists():
            shutil.rmtree(fresh)  # a previous demo stopped between export and rename
        say(f"\n== headquarters exports {DEVICE_ID}'s evidence for a court into {self.export} ==\n")
        code = step([self.bodycam_hq, "export", "--data-dir", str(self.hq), "--device", DEVICE_ID,
                     "--out", str(fresh)], echo=False)
        if code:
            print(f"the export failed (exit {code}); {self.export} was left as it was", file=sys.stderr)
            return code
        replaced = self.export.exists()
        if replaced:
            shutil.rmtree(self.export)
        fresh.rename(self.export)
        count = len(list(self.export.glob("*.bcs")))
        say(f"{count} entries exported to {self.export}" + (", replacing the last run's export" if replaced else ""))
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path("run-data"), help="where headquarters and the unit live")
    parser.add_argument("--script", default=INCIDENT, help="simulated button presses, e.g. 5:record,9:mark,15:record")
    parser.add_argument("--stay", choices=("auto", "yes", "no"), default="auto",
                        help="after the incident keep headquarters and the unit running for the operations room "
                        "until Ctrl-C (auto: when standard input is a terminal)")
    args = parser.parse_args(argv)
    try:
        timeline = Timeline.parse(args.script)
    except ValueError as exc:
        parser.error(str(exc))
    demo = Demo(args, timeline)
    signal.signal(signal.SIGINT, demo.on_sigint)
    return demo.run()


if __name__ == "__main__":
    sys.exit(main())
