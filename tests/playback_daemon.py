"""``bodycam-hq decryptd`` started for real by a test, as its own process on a unix socket."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from hq.decrypt_client import DecryptClient, DecryptClientError


class DecryptDaemon:
    """The decrypt component as a child process; ``stop`` ends it (SIGTERM) and checks it exited 0."""

    def __init__(self, hq_key: Path, socket: Path, timeout_s: float = 20.0) -> None:
        self.socket = socket
        self.log = socket.parent / "decryptd.log"
        self._log = self.log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hq.cli", "decryptd", "--hq-key", str(hq_key), "--socket", str(socket)],
            stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                DecryptClient(socket, timeout_s=2).ping()
                return
            except DecryptClientError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError(f"decryptd did not come up: {self.log.read_text()}") from None
                time.sleep(0.05)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        code = self.proc.wait(20)
        self._log.close()
        return code
