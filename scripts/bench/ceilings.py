"""The ceilings headquarters' ingest is measured against: SHA-256 line rate and curl into nginx.

Verification cannot go faster than hashing the bytes once (``sha256_line_rate``); receiving cannot
go faster than the machine's own TLS + HTTP stack moving the same chunks (``curl_into_nginx``:
curl PATCHes 4 MiB bodies on one keep-alive TLS 1.3 connection into an nginx on loopback that
reads and discards them). Both run here, on the same machine as the nodes they are compared with.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

from .common import MB, BenchError, Result, run_tool
from .sync import CurlRequest, curl_config, parse_curl_writeout

log = logging.getLogger("bench.ceilings")

NGINX_START_TIMEOUT_S = 10.0


def sha256_line_rate(total_bytes: int, block_bytes: int = 1 << 20) -> Result:
    """SHA-256 of ``total_bytes`` in ``block_bytes`` updates, on one core (hashlib, OpenSSL)."""
    block = os.urandom(block_bytes)
    h = hashlib.sha256()
    t0 = time.perf_counter()
    for _ in range(max(1, total_bytes // block_bytes)):
        h.update(block)
    wall = time.perf_counter() - t0
    return {"bytes": total_bytes, "wall_s": round(wall, 3), "MB_per_s": round(total_bytes / MB / wall, 1)}


def self_signed(work: Path) -> tuple[Path, Path]:
    cert, key = work / "nginx.pem", work / "nginx.key"
    run_tool(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
              "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
              "-addext", "subjectAltName=IP:127.0.0.1", "-days", "1"], timeout_s=30)
    os.chmod(key, 0o600)
    return cert, key


def nginx_config(work: Path, port: int, cert: Path, key: Path) -> str:
    return f"""daemon off;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.3;
        client_max_body_size 8m;
        client_body_buffer_size 8m;
        keepalive_requests 100000;
        location / {{ return 204; }}
    }}
}}
"""


def curl_into_nginx(work: Path, total_bytes: int, chunk_bytes: int, port: int, timeout_s: float) -> Result:
    """curl PATCHes ``total_bytes`` in ``chunk_bytes`` bodies into nginx over one TLS connection."""
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    curl = shutil.which("curl")
    if nginx is None or curl is None:
        raise BenchError("nginx and curl are needed for the transport ceiling (apt-get install -y nginx-light curl)")
    work.mkdir(parents=True, exist_ok=True)
    cert, key = self_signed(work)
    conf = work / "nginx.conf"
    conf.write_text(nginx_config(work, port, cert, key))
    proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(work)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        _wait_port(port, proc)
        chunk = work / "chunk.bin"
        chunk.write_bytes(os.urandom(chunk_bytes))
        n = max(1, total_bytes // chunk_bytes)
        reqs = [CurlRequest("PATCH", f"https://127.0.0.1:{port}/u", {"Content-Type": "application/offset+octet-stream"},
                            chunk) for _ in range(n)]
        config = work / "curl-nginx.conf"
        config.write_text(curl_config(reqs, cert))
        t0 = time.monotonic()
        done = subprocess.run([curl, "--config", str(config)], capture_output=True, text=True, timeout=timeout_s,
                              check=False)
        wall = time.monotonic() - t0
        answers = parse_curl_writeout(done.stdout)
        if done.returncode != 0 or len(answers) != n or any(a["status"] != 204 for a in answers):
            raise BenchError(f"curl into nginx: exit {done.returncode}, {len(answers)} of {n} answers")
        sent = n * chunk_bytes
        return {"bytes": sent, "requests": n, "wall_s": round(wall, 3), "MB_per_s": round(sent / MB / wall, 1)}
    finally:
        proc.terminate()
        proc.wait(10)


def _wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    import socket

    deadline = time.monotonic() + NGINX_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"nginx exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"nginx did not listen on 127.0.0.1:{port}")
