"""hq_connections section: what connections cost a headquarters node (security review, finding 2).

A real ``bodycam-hq serve`` on loopback (TLS); its resident memory (VmRSS from /proc) is read
at rest, with N TLS connections open and idle, and after N connections each announced an
unsigned 4 MiB PATCH and sent none of it (each is answered 401/429 and closed without its body:
the figure the review measured at 93 -> 704 MB). Figures only; nothing is asserted here.
"""

from __future__ import annotations

import logging
import re
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

from .agentproc import BIN
from .common import MB, Result, guarded, proc_status_kib

log = logging.getLogger("bench.hq_connections")

CONNECTIONS = 150


def _rss_bytes(pid: int) -> int:
    kib = proc_status_kib(Path(f"/proc/{pid}/status").read_text(), "VmRSS")
    if kib is None:
        raise RuntimeError("no VmRSS in /proc/PID/status")
    return kib * 1024


def _settle_rss(pid: int) -> int:
    time.sleep(1.0)
    return _rss_bytes(pid)


def run(quick: bool) -> Result:
    count = 50 if quick else CONNECTIONS
    with tempfile.TemporaryDirectory(prefix="bodycam-bench-hq-") as tmp:
        data = Path(tmp) / "H"
        subprocess.run([str(BIN / "bodycam-hq"), "keygen", "--data-dir", str(data)], check=True,
                       capture_output=True)
        proc = subprocess.Popen([str(BIN / "bodycam-hq"), "serve", "--data-dir", str(data), "--listen",
                                 "127.0.0.1:0", "--max-connections-per-source", str(count + 10)],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            assert proc.stdout is not None
            m = re.search(r":(\d+)/v1/", proc.stdout.readline())
            if m is None:
                raise RuntimeError("bodycam-hq serve did not start")
            port = int(m.group(1))
            ctx = ssl.create_default_context(cafile=str(data / "keys" / "ca.pem"))
            at_rest = _settle_rss(proc.pid)
            idle = [ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), 10), server_hostname="127.0.0.1")
                    for _ in range(count)]
            with_idle = _settle_rss(proc.pid)
            for sock in idle:
                sock.close()
            time.sleep(1.0)
            announced = []
            for i in range(count):
                sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), 10), server_hostname="127.0.0.1")
                sock.sendall(f"PATCH /v1/uploads/{'a' * 32} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                             f"Tus-Resumable: 1.0.0\r\nUpload-Offset: {i}\r\n"
                             f"Content-Length: {4 * 1024 * 1024}\r\n\r\n".encode())
                announced.append(sock)
            with_unsigned = _settle_rss(proc.pid)
            for sock in announced:
                sock.close()
        finally:
            proc.terminate()
            proc.wait(60)
        plain = guarded("plain connections", lambda: _plain_idle(data, count))
    return {
        "connections": count,
        "rss_at_rest_MB": round(at_rest / MB, 1),
        "rss_with_idle_connections_MB": round(with_idle / MB, 1),
        "memory_per_idle_connection_kB": round((with_idle - at_rest) / count / 1024, 1),
        "rss_after_unsigned_4MiB_patches_MB": round(with_unsigned / MB, 1),
        **plain,
        "review_figure_before_fix_MB": {"at_rest": 93, "after_150_unsigned": 704},
        "what": "VmRSS of the serve process; a TLS connection costs asyncio's 256 KiB read buffer, a plain one "
                "(--behind-proxy) does not",
    }


def _plain_idle(data: Path, count: int) -> Result:
    """kB per idle plain-HTTP connection of a node behind a proxy (--behind-proxy)."""
    proc = subprocess.Popen([str(BIN / "bodycam-hq"), "serve", "--data-dir", str(data), "--listen", "127.0.0.1:0",
                             "--behind-proxy", "--public-origin", "https://hq.example",
                             "--max-connections-per-source", str(count + 10)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        m = re.search(r":(\d+)/v1/", proc.stdout.readline())
        if m is None:
            raise RuntimeError("bodycam-hq serve --behind-proxy did not start")
        at_rest = _settle_rss(proc.pid)
        idle = [socket.create_connection(("127.0.0.1", int(m.group(1))), 10) for _ in range(count)]
        with_idle = _settle_rss(proc.pid)
        for sock in idle:
            sock.close()
        return {"memory_per_idle_plain_connection_kB": round((with_idle - at_rest) / count / 1024, 1)}
    finally:
        proc.terminate()
        proc.wait(60)
