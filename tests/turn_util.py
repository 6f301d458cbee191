"""A real TURN server (Debian's coturn) on loopback for the live-view tests, with time-limited credentials.

``Turn(work_dir, relay_ip)`` starts ``turnserver`` listening on a free 127.0.0.1 UDP port, its
relay addresses on ``relay_ip`` (the host's address, where Janus's media sockets are: see
tests/janus_util.py), with the TURN REST scheme (``use-auth-secret``): headquarters mints
credentials from ``secret`` per stream. UDP only (no TCP, TLS or DTLS listener), no CLI, no database. ``url`` is
``turn:127.0.0.1:PORT?transport=udp``; ``stop()`` ends it.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import time
from pathlib import Path

from tests.daemon_util import Daemon
from tests.gpsd_util import free_port
from tests.prereqs import require_tool

START_TIMEOUT_S = 10.0


def _free_udp_port() -> int:
    """A loopback UDP port free together with the next one: coturn also listens on "listening port
    plus one" (its RFC 5780 alternative port), and a busy one makes it retry until the start times out."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as alt:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
            try:
                alt.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise RuntimeError("no two consecutive free UDP ports on 127.0.0.1 for turnserver")


class Turn(Daemon):
    def __init__(self, work_dir: Path, relay_ip: str, port: int | None = None) -> None:
        self.binary = require_tool("turnserver")
        self.folder = work_dir / "turn"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or _free_udp_port()
        self.secret = secrets.token_urlsafe(24)
        self.secret_file = self.folder / "secret"
        fd = os.open(self.secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(self.secret + "\n")
        self.url = f"turn:127.0.0.1:{self.port}?transport=udp"
        self.log_path = self.folder / "turn.log"
        relay = free_port() % 20000 + 40000
        self.argv = [
            self.binary, "-n", "--listening-ip=127.0.0.1", f"--relay-ip={relay_ip}", f"--listening-port={self.port}",
            f"--min-port={relay}", f"--max-port={relay + 200}", "--use-auth-secret",
            f"--static-auth-secret={self.secret}", "--realm=bodycam-test", "--no-tls", "--no-dtls", "--no-tcp",
            "--no-cli", "--no-tcp-relay", f"--pidfile={self.folder / 'turn.pid'}", f"--log-file={self.log_path}",
            "--simple-log", f"--userdb={self.folder / 'turndb'}",
        ]
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Turn:
        self._proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"turnserver exited {self._proc.returncode}: {self.log_tail()}")
            if self._answers():
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"turnserver did not answer within {START_TIMEOUT_S:g} s: {self.log_tail()}")

    def _answers(self) -> bool:
        """A STUN binding request answered on the listening port."""
        request = b"\x00\x01\x00\x00\x21\x12\xa4\x42" + secrets.token_bytes(12)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.3)
            s.sendto(request, ("127.0.0.1", self.port))
            try:
                data, _ = s.recvfrom(2048)
            except OSError:
                return False
        return data[:2] == b"\x01\x01"
