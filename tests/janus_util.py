"""A real Janus (Debian's ``janus``) on loopback with only its videoroom plugin and HTTP API, for the live-view tests.

``Janus(work_dir)`` writes a generated configuration folder (HTTP API on a free 127.0.0.1 port with a
random ``api_secret``, every other plugin, transport, event handler and logger disabled), starts
``janus`` in the foreground and waits until its API answers ``info``; ``stop()`` ends it and the
folder goes with the test's ``tmp_path``. ``url`` is the API's base URL
(``http://127.0.0.1:PORT/janus``) and ``api_secret`` the secret headquarters passes.

Media: Janus 1.1 never gathers ICE candidates on a loopback interface, so its media sockets are on
this host's own address (``host_address()``), reached by peers on this host only through the TURN
relay or directly; nothing else of it listens off loopback. Tried with Janus 1.1.2: ``nat:
ice_enforce_list = "lo"`` (or ``"127.0.0.1"``) is accepted ("Adding 'lo' to the ICE enforce
list") but the answer's candidates stay on the host's addresses; ``nat_1_1_mapping = "127.0.0.1"``
only rewrites the advertised address, not the socket's, so peers could not reach it.
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.daemon_util import Daemon
from tests.gpsd_util import free_port
from tests.prereqs import require_tool

START_TIMEOUT_S = 20.0
KEEP = {"plugins": "libjanus_videoroom.so", "transports": "libjanus_http.so"}


def host_address() -> str:
    """This host's first non-loopback IPv4 address: where Janus's media sockets are (see above)."""
    import ifaddr  # aioice's dependency, installed with aiortc

    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str) and not ip.ip.startswith("127."):
                return ip.ip
    raise RuntimeError("this host has no non-loopback IPv4 address: Janus cannot gather a media candidate")


def _lib_dir(kind: str) -> str:
    """Debian's multiarch folder of Janus's ``kind`` (plugins, transports, events, loggers)."""
    found = sorted(glob.glob(f"/usr/lib/*/janus/{kind}"))
    if not found:
        raise RuntimeError(f"janus {kind} folder not found: is the janus package installed?")
    return found[0]


def _disabled(kind: str) -> str:
    """Every module of ``kind`` except the one we keep, as janus.jcfg's ``disable`` list."""
    keep = KEEP.get(kind)
    names = sorted({os.path.basename(p) for p in glob.glob(os.path.join(_lib_dir(kind), "*.so"))})
    return ",".join(n for n in names if n != keep)


def render_config(folder: Path, http_port: int, api_secret: str, rtp_ports: tuple[int, int]) -> dict[str, str]:
    """The configuration files (name -> text) of a loopback Janus with the videoroom plugin only."""
    core = f"""general: {{
    configs_folder = "{folder}"
    plugins_folder = "{_lib_dir('plugins')}"
    transports_folder = "{_lib_dir('transports')}"
    events_folder = "{_lib_dir('events')}"
    loggers_folder = "{_lib_dir('loggers')}"
    log_to_stdout = true
    debug_level = 4
    api_secret = "{api_secret}"
    session_timeout = 60
    server_name = "bodycam-live-test"
    protected_folders = ["/bin", "/boot", "/dev", "/etc", "/lib", "/proc", "/root", "/sbin", "/sys", "/usr", "/var"]
}}
certificates: {{
}}
media: {{
    rtp_port_range = "{rtp_ports[0]}-{rtp_ports[1]}"
}}
nat: {{
    ignore_mdns = true
}}
plugins: {{
    disable = "{_disabled('plugins')}"
}}
transports: {{
    disable = "{_disabled('transports')}"
}}
events: {{
    broadcast = false
    disable = "{_disabled('events')}"
}}
loggers: {{
    disable = "{_disabled('loggers')}"
}}
"""
    http = f"""general: {{
    json = "compact"
    base_path = "/janus"
    http = true
    port = {http_port}
    ip = "127.0.0.1"
    https = false
}}
admin: {{
    admin_http = false
    admin_https = false
}}
cors: {{
}}
"""
    videoroom = """general: {
}
"""
    return {"janus.jcfg": core, "janus.transport.http.jcfg": http, "janus.plugin.videoroom.jcfg": videoroom}


class Janus(Daemon):
    """One Janus process on loopback; the context manager stops it."""

    def __init__(self, work_dir: Path) -> None:
        self.binary = require_tool("janus")
        self.folder = work_dir / "janus"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.api_secret = secrets.token_urlsafe(24)
        base = 20000 + (self.port % 200) * 100
        for name, text in render_config(self.folder, self.port, self.api_secret, (base, base + 99)).items():
            path = self.folder / name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(text)
        self.url = f"http://127.0.0.1:{self.port}/janus"
        self.log_path = self.folder / "janus.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Janus:
        log = open(self.log_path, "wb")  # noqa: SIM115  # the child keeps writing to it
        self._proc = subprocess.Popen(
            [self.binary, "-C", str(self.folder / "janus.jcfg"), "-F", str(self.folder), "-o"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"janus exited {self._proc.returncode} at start: {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/info", timeout=1) as resp:
                    if json.load(resp).get("janus") == "server_info":
                        return self
            except (OSError, urllib.error.URLError, ValueError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"janus did not answer within {START_TIMEOUT_S:g} s: {self.log_tail()}")
