"""A real gpsd on 127.0.0.1, fed NMEA through a pseudo-terminal the test writes into."""

from __future__ import annotations

import contextlib
import os
import pty
import shutil
import socket
import subprocess
import time
import tty
from pathlib import Path

GPSD = shutil.which("gpsd") or next((p for p in ("/usr/sbin/gpsd", "/sbin/gpsd") if os.path.exists(p)), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Gpsd:
    """A gpsd reading a pty that the test writes NMEA into. Only ever on 127.0.0.1."""

    def __init__(self, tmp: Path) -> None:
        self.master, self._slave = pty.openpty()
        tty.setraw(self._slave)
        self.device = os.ttyname(self._slave)
        self.port = free_port()
        self._control = tmp / "gpsd.sock"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert GPSD is not None
        # -N foreground, -n poll the device without a client, -b read-only (never reconfigure the
        # "receiver"); gpsd listens on loopback unless -G, and -S picks our port.
        self._proc = subprocess.Popen(
            [GPSD, "-N", "-n", "-b", "-S", str(self.port), "-F", str(self._control), self.device],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return
            assert self._proc.poll() is None, "gpsd exited at start"
            time.sleep(0.05)
        raise AssertionError("gpsd did not listen within 10 s")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def write(self, lines: list[str]) -> None:
        os.write(self.master, "".join(line + "\r\n" for line in lines).encode())

    def close(self) -> None:
        self.stop()
        os.close(self.master)
        os.close(self._slave)


