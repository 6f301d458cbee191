"""A real HAProxy on loopback terminating TLS in front of headquarters nodes, for the fleet tests.

``HaProxy(work_dir, cert_pem, key_pem, backends)`` writes a configuration, starts ``haproxy -db``
(foreground, no daemon) and waits until its frontend accepts connections; ``stop()`` ends it.
Backends are plain-HTTP nodes on 127.0.0.1, health-checked with ``GET /healthz`` every 200 ms, so
a killed node leaves the rotation within about a second and clients are sent to the others.
A check waits up to ``timeout check`` (2 s) for the answer: without it HAProxy takes ``inter``
(200 ms) as the check's timeout, and a node merely slow under load (a loaded machine) is marked
down, both at once at times, and every request in the meantime is answered ``503``.
HAProxy adds ``X-Forwarded-For`` and ``X-Forwarded-Proto``; the nodes build the signed
``@target-uri`` from their configured public origin, never from these headers.

The certificate and key are concatenated into one PEM (HAProxy's ``crt`` form) with mode 0600.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

from tests.gpsd_util import free_port
from tests.prereqs import require_tool

START_TIMEOUT_S = 15.0
HEALTH_INTERVAL_MS = 200


def render_config(port: int, pem: Path, backends: list[tuple[str, int]], *, balance: str = "roundrobin") -> str:
    """HAProxy's configuration: TLS on ``port``, HTTP to ``backends`` (name, port) on loopback."""
    servers = "\n".join(
        f"    server {name} 127.0.0.1:{bport} check inter {HEALTH_INTERVAL_MS} fall 2 rise 2"
        for name, bport in backends
    )
    return f"""global
    maxconn 4096
    ssl-default-bind-options ssl-min-ver TLSv1.2 no-tls-tickets
    ssl-default-bind-ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256
    ssl-default-bind-ciphers ECDHE+AESGCM:ECDHE+CHACHA20

defaults
    mode http
    option forwardfor
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    timeout http-request 30s
    timeout check 2s
    retries 2
    option redispatch

frontend hq
    bind 127.0.0.1:{port} ssl crt {pem} alpn http/1.1
    http-request set-header X-Forwarded-Proto https
    default_backend nodes

backend nodes
    balance {balance}
    option httpchk GET /healthz
{servers}
"""


class HaProxy:
    """One HAProxy process; the context manager stops it."""

    def __init__(self, work_dir: Path, cert_pem: Path, key_pem: Path, backends: list[tuple[str, int]], *,
                 balance: str = "roundrobin", port: int | None = None) -> None:
        binary = require_tool("haproxy")
        work_dir.mkdir(parents=True, exist_ok=True)
        pem = work_dir / "haproxy.pem"
        fd = os.open(pem, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(cert_pem.read_bytes() + key_pem.read_bytes())
        self.port = port or free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.config_path = work_dir / "haproxy.cfg"
        self.config_path.write_text(render_config(self.port, pem, backends, balance=balance))
        check = subprocess.run([binary, "-c", "-f", str(self.config_path)], capture_output=True, text=True,
                               check=False)
        if check.returncode != 0:
            raise RuntimeError(f"haproxy refused its configuration: {check.stdout}{check.stderr}")
        self.log_path = work_dir / "haproxy.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen([binary, "-db", "-f", str(self.config_path)], stdout=self._log,
                                     stderr=subprocess.STDOUT)
        self._wait_listening()

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"haproxy exited with {self.proc.returncode}: {self.log_path.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"haproxy did not listen on 127.0.0.1:{self.port} within {START_TIMEOUT_S} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()

    def __enter__(self) -> HaProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
