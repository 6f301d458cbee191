"""A headquarters node behind a real TLS-terminating proxy (HAProxy, nginx from Debian) on loopback,
configured as docs/deployment-hq.md shows: the node listens plain HTTP with --behind-proxy and
--public-origin naming the proxy; a unit's signed upload gets its receipt through the proxy (the
signature covers the configured origin, which the proxy does not change), a request naming
another host is refused 421, and refusals are attributed to the client's address."""

from __future__ import annotations

import hashlib
import http.client
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hq.keygen import keygen
from tests.integration.test_hq_review import BIN, create_headers, enrolled, free_port, signed
from tests.prereqs import require_tool

HAPROXY = """
global
    log stderr format raw local0 err
defaults
    mode http
    timeout connect 5s
    timeout client 130s
    timeout server 300s
frontend hq
    bind 127.0.0.1:{proxy_port} ssl crt {pem} alpn http/1.1 ssl-min-ver TLSv1.2 ciphers ECDHE+AESGCM:ECDHE+CHACHA20
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    option forwardfor
    default_backend nodes
backend nodes
    server node1 {node}
"""

NGINX = """
daemon off;
{user}
pid {run}/nginx.pid;
error_log {run}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {run}/body; proxy_temp_path {run}/proxy;
    fastcgi_temp_path {run}/fcgi; uwsgi_temp_path {run}/uwsgi; scgi_temp_path {run}/scgi;
    upstream hq_nodes {{ server {node}; }}
    server {{
        listen 127.0.0.1:{proxy_port} ssl;
        ssl_certificate {cert}; ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3; ssl_ciphers ECDHE+AESGCM:ECDHE+CHACHA20;
        client_max_body_size 5m;
        proxy_request_buffering off;
        proxy_read_timeout 300s;
        location / {{
            proxy_pass http://hq_nodes;
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
}}
"""


def start_proxy(kind: str, run: Path, keys: Path, proxy_port: int, node: str) -> subprocess.Popen[bytes]:
    run.mkdir()
    if kind == "haproxy":
        pem = run / "hq.pem"
        pem.write_bytes((keys / "server.pem").read_bytes() + (keys / "server.key").read_bytes())
        pem.chmod(0o600)
        conf = run / "haproxy.cfg"
        conf.write_text(HAPROXY.format(proxy_port=proxy_port, node=node, pem=pem))
        cmd = [require_tool("haproxy"), "-db", "-f", str(conf)]
    else:
        import os

        conf = run / "nginx.conf"
        user = "user root;" if os.geteuid() == 0 else ""
        conf.write_text(NGINX.format(user=user, run=run, proxy_port=proxy_port, node=node,
                                     cert=keys / "server.pem", key=keys / "server.key"))
        cmd = [require_tool("nginx"), "-p", str(run), "-c", str(conf)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=(run / "stderr").open("wb"))
    ctx = ssl.create_default_context(cafile=str(keys / "ca.pem"))
    deadline = time.monotonic() + 20
    while True:
        try:
            conn = http.client.HTTPSConnection("127.0.0.1", proxy_port, context=ctx, timeout=5)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                conn.close()
                return proc
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"{kind} did not come up: {(run / 'stderr').read_text()}")
        time.sleep(0.2)


@pytest.fixture(params=[("haproxy", "tcp"), ("nginx", "tcp"), ("haproxy", "unix")], ids=lambda p: "-".join(p))
def behind(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, int, subprocess.Popen[str]]]:
    kind, transport = request.param
    data = tmp_path / "H"
    keygen(data / "keys")
    proxy_port = free_port()
    if transport == "unix":
        listen = f"unix:{tmp_path / 'hq.sock'}"
        upstream = str(tmp_path / "hq.sock") if kind == "haproxy" else f"unix:{tmp_path / 'hq.sock'}"
    else:
        node_port = free_port()
        listen = upstream = f"127.0.0.1:{node_port}"
    node = subprocess.Popen(
        [str(BIN / "bodycam-hq"), "serve", "--data-dir", str(data), "--listen", listen,
         "--behind-proxy", "--public-origin", f"https://127.0.0.1:{proxy_port}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert node.stdout is not None
    line = node.stdout.readline()
    assert line.startswith("bodycam-hq: serving http") and listen.split(":", 1)[-1] in line, line
    proxy = start_proxy(kind, tmp_path / kind, data / "keys", proxy_port, upstream)
    try:
        yield data, proxy_port, node
    finally:
        proxy.terminate()
        proxy.wait(10)
        node.terminate()
        node.wait(30)


def test_a_unit_uploads_through_a_tls_terminating_proxy(behind: tuple[Path, int, subprocess.Popen[str]],
                                                        tmp_path: Path) -> None:
    data, proxy_port, node = behind
    unit = enrolled(data, tmp_path)
    origin = f"https://127.0.0.1:{proxy_port}"
    ctx = ssl.create_default_context(cafile=str(data / "keys" / "ca.pem"))
    conn = http.client.HTTPSConnection("127.0.0.1", proxy_port, context=ctx, timeout=30)
    path = unit.segment()
    evidence = path.read_bytes()
    conn.request("POST", "/v1/uploads/", headers=signed(unit, "POST", origin, "/v1/uploads/",
                                                          create_headers(path, 0, unit.device_id)))
    r = conn.getresponse()
    r.read()
    assert r.status == 201, r.status
    location = r.getheader("Location") or ""
    offset, step = 0, 64 * 1024
    while offset < len(evidence):
        chunk = evidence[offset:offset + step]
        patch = {"Content-Type": "application/offset+octet-stream", "Upload-Offset": str(offset)}
        conn.request("PATCH", location, body=chunk, headers=signed(unit, "PATCH", origin, location, patch, chunk))
        r = conn.getresponse()
        r.read()
        assert r.status == 204, r.status
        offset = int(r.getheader("Upload-Offset") or "0")
    assert r.getheader("Bodycam-Receipt")
    stored = data / "evidence" / unit.device_id
    assert [hashlib.sha256(p.read_bytes()).digest() for p in stored.iterdir()] == [hashlib.sha256(evidence).digest()]
    # A Host that is not the configured origin: refused at the node, whatever the proxy passes on.
    conn.putrequest("OPTIONS", "/v1/uploads/", skip_host=True)
    conn.putheader("Host", "elsewhere.example")
    conn.endheaders()
    r = conn.getresponse()
    r.read()
    assert r.status == 421
    conn.close()
    node.terminate()
    assert node.wait(30) == 0
    from hq.index import SqliteIndex

    with SqliteIndex(data / "index.sqlite") as index:
        [refused] = index.audit_log("auth")
    assert refused.detail["reason"] == "misdirected" and refused.detail["peer"] == "127.0.0.1"
