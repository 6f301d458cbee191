"""The laptop's end of a unit's serial console: a pty master, a null modem, the diag client."""

from __future__ import annotations

import json
import os
import select
import subprocess
import threading
import time
import tty
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.console.auth import login_message, raw_public
from tests.integration.agent_util import BIN


class Line:
    """The laptop's end of the serial line: the master side of a pty."""

    def __init__(self, link: Path, prompt: bytes) -> None:
        self.link = link
        self.prompt = prompt  # b"bodycam:<device id>"
        self.master, slave = os.openpty()
        tty.setraw(slave)  # until the unit opens it: no kernel echo of what the test writes
        tmp = link.with_name(link.name + ".new")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.ttyname(slave))
        tmp.replace(link)  # the unit's configured device now leads to this pty
        os.close(slave)
        self.buf = b""
        self.ids = iter(range(1, 10**9))
        self.session: str | None = None  # the id the unit gave this script's login; its requests carry it

    def close(self) -> None:
        os.close(self.master)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.master, view)
            view = view[n:]

    def write_paced(self, data: bytes, baud: int = 115200) -> None:
        """As fast as a real line at ``baud`` carries it (a pty has no speed; faster is a flood)."""
        for i in range(0, len(data), 512):
            self.write(data[i : i + 512])
            time.sleep(len(data[i : i + 512]) * 10 / baud)

    def read_some(self, timeout_s: float) -> bytes:
        ready, _, _ = select.select([self.master], [], [], timeout_s)
        if not ready:
            return b""
        try:
            return os.read(self.master, 65536)
        except OSError:  # EIO: nobody holds the other end (the agent is reopening it)
            time.sleep(0.05)
            return b""

    def read_until(self, marker: bytes, timeout_s: float = 10.0) -> bytes:
        deadline = time.monotonic() + timeout_s
        while marker not in self.buf:
            if time.monotonic() > deadline:
                raise AssertionError(f"no {marker!r} within {timeout_s} s; got {self.buf[-2000:]!r}")
            self.buf += self.read_some(0.2)
        out, self.buf = self.buf.split(marker, 1)
        return out + marker

    def type(self, text: str, timeout_s: float = 30.0) -> str:
        """A person types a line; everything up to the next prompt."""
        self.buf = b""
        self.write(text.encode() + b"\r")
        out = self.read_until(self.prompt, timeout_s)
        out += self.read_until(b" ", 2)  # the rest of the prompt: "> ", or "# " when logged in
        return out.decode("utf-8", "replace")

    def ask(self, cmd: str, args: list[Any] | dict[str, Any] | None = None, timeout_s: float = 30.0,
            session: str | None = "") -> dict[str, Any]:
        """A script sends one JSON request; its JSON answer. It carries this script's session id
        unless ``session`` says otherwise (None: none)."""
        req_id = next(self.ids)
        req: dict[str, Any] = {"cmd": cmd, "args": args or [], "id": req_id}
        chosen = self.session if session == "" else session
        if chosen is not None and cmd != "login":
            req["session"] = chosen
        self.write(json.dumps(req).encode() + b"\n")
        deadline = time.monotonic() + timeout_s
        while True:
            while b"\n" in self.buf:
                raw, self.buf = self.buf.split(b"\n", 1)
                if b"{" in raw:
                    try:
                        doc = json.loads(raw[raw.index(b"{"):])
                    except ValueError:
                        continue
                    if isinstance(doc, dict) and doc.get("id") == req_id:
                        return doc
            if time.monotonic() > deadline:
                raise AssertionError(f"no answer to {cmd} within {timeout_s} s; got {self.buf[-2000:]!r}")
            self.buf += self.read_some(0.2)

    def login(self, key: ed25519.Ed25519PrivateKey) -> dict[str, Any]:
        challenge = self.ask("login")
        assert challenge["ok"], challenge
        sig = key.sign(login_message(challenge["data"]["device_id"], bytes.fromhex(challenge["data"]["nonce"])))
        doc = self.ask("login", {"key": raw_public(key.public_key()).hex(), "signature": sig.hex()})
        self.session = doc["data"].get("session") if doc["ok"] else None
        return doc

    def wait_served(self, timeout_s: float = 20.0) -> None:
        """Until the unit answers on this line (it may still be reopening the device)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.buf = b""
            self.write(b"\x15\r")
            try:
                self.read_until(self.prompt, 1.0)
                return
            except AssertionError:
                continue
        raise AssertionError("the console never answered (does agent.daemon call start_console? see docs/console.md)")


class NullModem:
    """Joins the unit's line to a second pty, so ``bodycam diag`` opens a device path like on a laptop."""

    def __init__(self, line: Line) -> None:
        self.line = line
        self.master, slave = os.openpty()
        self.path = os.ttyname(slave)
        tty.setraw(slave)
        os.close(slave)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.line.master, self.master], [], [], 0.1)
            for fd in ready:
                other = self.master if fd == self.line.master else self.line.master
                try:
                    data = os.read(fd, 65536)
                    if data:
                        os.write(other, data)
                except OSError:
                    time.sleep(0.01)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        os.close(self.master)


def diag(*args: str, stdin: str | None = None, home: Path | None = None,
         timeout_s: float = 90) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HOME=str(home)) if home is not None else None
    return subprocess.run([str(BIN / "bodycam"), "diag", *args], capture_output=True, text=True, timeout=timeout_s,
                          input=stdin, env=env)
