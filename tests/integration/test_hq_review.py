"""Regression tests for the outside security review of headquarters' HTTP layer (issue 14,
findings 1, 2, 3, 4, 6, 7 and the HTTP half of 9), against a real ``bodycam-hq serve`` process
over real TLS on 127.0.0.1, with raw sockets where a well-behaved client would hide the bug."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.evidence.httpsig import new_nonce, sign_request
from agent.evidence.receipt import make_heartbeat
from hq.cli import main as hq_main
from hq.index import SqlIndex, SqliteIndex
from hq.keygen import keygen
from hq.records import AuditRecord
from hq.tus import UploadMeta, encode_metadata
from tests.evidence_util import ChainBuilder
from tests.integration.index_util import cli_url, run_hq
from tests.prereqs import require_tool

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Serve:
    """``bodycam-hq serve`` as a child process; its log is kept for the assertions."""

    def __init__(self, data: Path, *args: str, port: int = 0, env: dict[str, str] | None = None) -> None:
        self.data = data
        self.log_path = data.parent / f"serve-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [str(BIN / "bodycam-hq"), "serve", "--data-dir", str(data), "--listen", f"127.0.0.1:{port}", *args],
            stdout=subprocess.PIPE, stderr=self._log, text=True, env={**os.environ, **(env or {})})
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        m = re.search(r"serving https://127\.0\.0\.1:(\d+)/", line)
        assert m, f"no serving line: {line!r}\n{self.log_path.read_text()}"
        self.port = int(m.group(1))
        self.metrics_port: int | None = None
        if "--metrics-listen" in args:
            m = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", self.proc.stdout.readline())
            assert m
            self.metrics_port = int(m.group(1))
        self.ctx = ssl.create_default_context(cafile=str(data / "keys" / "ca.pem"))

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
            assert self.proc.wait(30) == 0
        self._log.close()
        return self.log_path.read_bytes().decode("utf-8", "replace")

    def conn(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, timeout=30)

    def tls_socket(self) -> ssl.SSLSocket:
        raw = socket.create_connection(("127.0.0.1", self.port), 10)
        return self.ctx.wrap_socket(raw, server_hostname="127.0.0.1")

    def audit(self, event_type: str | None = None) -> list[AuditRecord]:
        with SqliteIndex(self.data / "index.sqlite") as index:
            return index.audit_log(event_type)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    keygen(tmp_path / "H" / "keys")
    return tmp_path / "H"


@pytest.fixture
def hq(data: Path) -> Iterator[Serve]:
    serve = Serve(data)
    yield serve
    serve.stop()


def enrolled(data: Path, tmp: Path, device_id: str = "unit-r1") -> ChainBuilder:
    unit = ChainBuilder(tmp / device_id, device_id=device_id)
    pub = unit.write_device_pub(tmp / f"{device_id}.pub")
    assert hq_main(["enroll", "--data-dir", str(data), "--device-id", device_id, "--device-pub", str(pub)]) == 0
    return unit


def signed(unit: ChainBuilder, method: str, origin: str, path: str, headers: dict[str, str],
           body: bytes = b"") -> dict[str, str]:
    h = {"Tus-Resumable": "1.0.0", **headers}
    return {**h, **sign_request(method, origin + path, h, body, unit.device_id, unit.signer, int(time.time()),
                                new_nonce())}


def create_headers(path: Path, seq: int, device_id: str) -> dict[str, str]:
    data = path.read_bytes()
    meta = UploadMeta(device_id, seq, path.name, hashlib.sha256(data).hexdigest())
    return {"Upload-Length": str(len(data)), "Upload-Metadata": encode_metadata(meta)}


def read_until_closed(sock: ssl.SSLSocket, timeout_s: float = 10.0) -> bytes:
    """Everything the server sends until it closes (a reset after its answer counts as closed)."""
    sock.settimeout(timeout_s)
    got = b""
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except (ConnectionResetError, ssl.SSLError, TimeoutError) as exc:
        if isinstance(exc, TimeoutError):
            raise AssertionError(f"the server kept the connection open; got {got[:200]!r}") from exc
    return got


# -- finding 2: the signature before the body, connections capped ---------------------------

def test_unsigned_patches_are_refused_before_their_bodies_and_closed(hq: Serve) -> None:
    # 150 connections each announcing a 4 MiB body that never comes: each is answered without
    # it (the server read none of it) and closed; none is held open waiting for the body.
    socks = []
    for i in range(150):
        try:
            sock = hq.tls_socket()
        except (ConnectionResetError, ssl.SSLError):
            socks.append(None)  # refused at once by the per-source cap: also never read
            continue
        sock.sendall(f"PATCH /v1/uploads/{'a' * 32} HTTP/1.1\r\nHost: 127.0.0.1:{hq.port}\r\n"
                     f"Tus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\n"
                     f"Upload-Offset: {i}\r\nContent-Length: {4 * 1024 * 1024}\r\n\r\n".encode())
        socks.append(sock)
    answered = refused = 0
    for sock in socks:
        if sock is None:
            refused += 1
            continue
        with sock:
            reply = read_until_closed(sock)
        if not reply:
            refused += 1
            continue
        head = reply.split(b"\r\n\r\n", 1)[0].lower()
        assert re.match(rb"http/1.1 (401|429) ", head), head
        assert b"connection: close" in head
        answered += 1
    assert answered + refused == 150 and answered >= 30


def test_a_signed_request_is_checked_before_its_body_and_the_body_against_its_digest(
        data: Path, hq: Serve, tmp_path: Path) -> None:
    unit = enrolled(data, tmp_path)
    origin = f"https://127.0.0.1:{hq.port}"
    path = unit.event("boot")
    conn = hq.conn()
    conn.request("POST", "/v1/uploads/", headers=signed(unit, "POST", origin, "/v1/uploads/",
                                                          create_headers(path, 0, unit.device_id)))
    r = conn.getresponse()
    r.read()
    assert r.status == 201
    location = r.getheader("Location")
    assert location
    chunk = path.read_bytes()[:1000]
    patch = {"Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}
    h = signed(unit, "PATCH", origin, location, patch, chunk)
    # The signature names a digest: a body that is not that one is refused once read.
    conn.request("PATCH", location, body=b"x" * len(chunk), headers=h)
    r = conn.getresponse()
    assert r.status == 401 and "Content-Digest" in json.loads(r.read())["error"]["message"]
    # A signature that does not verify is refused with the body never read: the answer comes
    # while the client is still to send it, and the connection is closed.
    bad = {**signed(unit, "PATCH", origin, location, patch, chunk), "Upload-Offset": "1"}
    with hq.tls_socket() as sock:
        head = "".join(f"{k}: {v}\r\n" for k, v in bad.items())
        sock.sendall(f"PATCH {location} HTTP/1.1\r\nHost: 127.0.0.1:{hq.port}\r\n{head}"
                     f"Content-Length: {len(chunk)}\r\n\r\n".encode())
        reply = read_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 401 ") and b"connection: close" in reply.lower()
    conn.close()
    hq.stop()
    reasons = [(a.actor, a.detail["reason"]) for a in hq.audit("auth")]
    assert ("unauthenticated", "digest") in reasons and ("unauthenticated", "bad-signature") in reasons


def test_connections_over_the_per_source_cap_are_closed_at_once(data: Path) -> None:
    hq = Serve(data, "--max-connections-per-source", "4")
    held = [hq.tls_socket() for _ in range(4)]
    try:
        for sock in held:  # each of the four is served
            sock.sendall(b"OPTIONS /v1/uploads/ HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % hq.port)
            assert sock.recv(65536).startswith(b"HTTP/1.1 204 ")
        try:
            with hq.tls_socket() as fifth:
                fifth.sendall(b"OPTIONS /v1/uploads/ HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % hq.port)
                assert read_until_closed(fifth) == b""
        except (ConnectionResetError, ssl.SSLError, BrokenPipeError):
            pass  # closed during or right after the handshake: refused as well
        held.pop().close()
        deadline = time.monotonic() + 10
        while True:  # the server notices the close, then a new connection is served again
            with hq.tls_socket() as again:
                again.sendall(b"OPTIONS /v1/uploads/ HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % hq.port)
                if read_first(again).startswith(b"HTTP/1.1 204 "):
                    break
            assert time.monotonic() < deadline, "a freed slot was never reused"
            time.sleep(0.1)
    finally:
        for sock in held:
            sock.close()
        hq.stop()


def read_first(sock: ssl.SSLSocket) -> bytes:
    try:
        return sock.recv(65536)
    except (ConnectionResetError, ssl.SSLError):
        return b""


# -- finding 3: a body left on the connection is never parsed as a request ---------------------

@pytest.mark.parametrize("method, target", [("POST", "/nowhere"), ("PUT", "/v1/uploads/")])
def test_the_body_of_a_request_refused_before_reading_it_is_not_a_next_request(
        hq: Serve, method: str, target: str) -> None:
    smuggled = (f"POST /v1/heartbeat HTTP/1.1\r\nHost: 127.0.0.1:{hq.port}\r\nContent-Length: 0\r\n"
                f"Signature-Input: sig1=(\"@method\");created=1;nonce=\"smuggledsmuggled\";keyid=\"smuggled\"\r\n"
                f"Signature: sig1=:AAAA:\r\n\r\n").encode()
    with hq.tls_socket() as sock:
        sock.sendall(f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{hq.port}\r\n"
                     f"Content-Length: {len(smuggled)}\r\n\r\n".encode() + smuggled)
        reply = read_until_closed(sock)
    assert reply.count(b"HTTP/1.1 ") == 1, reply  # one answer: the smuggled request was never run
    assert reply.startswith(b"HTTP/1.1 404 " if method == "POST" else b"HTTP/1.1 405 ")
    hq.stop()
    assert not any(a.detail.get("claimed_key_id") == "smuggled" for a in hq.audit("auth"))
    assert {a.detail["reason"] for a in hq.audit("auth")} == {"not-found" if method == "POST" else
                                                                "method-not-allowed"}


# -- findings 1 and 7: refusals cannot grow storage; no actor from a claim; escaped --------------

def test_refusals_with_huge_queries_are_aggregated_and_rate_limited(hq: Serve) -> None:
    query = "q=" + "A" * 60_000
    statuses: dict[int, int] = {}
    conn = hq.conn()
    for _ in range(300):
        conn.request("POST", f"/v1/uploads/?{query}", body=b"", headers={
            "Tus-Resumable": "1.0.0", "Upload-Length": "10",
            "Signature-Input": 'sig1=("@method");created=1;nonce="abcdefghijklmnop";keyid="forged-key"',
            "Signature": "sig1=:AAAA:"})
        r = conn.getresponse()
        r.read()
        statuses[r.status] = statuses.get(r.status, 0) + 1
        if r.status == 429:
            assert int(r.getheader("Retry-After", "0")) >= 1
        if r.getheader("Connection") == "close":
            conn.close()
            conn = hq.conn()
    conn.close()
    assert set(statuses) <= {401, 429} and statuses.get(429, 0) > 0, statuses
    hq.stop()
    records = hq.audit("auth")
    assert len(records) <= 8  # 300 refusals: a handful of rows, not 300 (17.7 MB before the fix)
    assert sum(int(a.detail["count"]) for a in records) == 300
    for a in records:
        assert a.actor == "unauthenticated" and "?" not in a.target and len(a.target) <= 200
    assert any(a.detail.get("claimed_key_id") == "forged-key" for a in records)


def test_escape_bytes_in_paths_reach_neither_log_nor_audit_raw(hq: Serve) -> None:
    conn = hq.conn()
    conn.request("GET", "/v1/%1b[2J%1b]0;owned%07%c2%9b31m/x")
    r = conn.getresponse()
    r.read()
    assert r.status == 404
    conn.close()
    log = hq.stop()
    [refused] = hq.audit("auth")
    assert refused.target.startswith("/v1/\\x1b[2J\\x1b]0;owned\\x07\\x9b31m")
    assert "\\x1b[2J" in log  # the refusal is logged, escaped
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f]", log), "a control character reached the log raw"


# -- finding 4: the configured origin, not the client's Host -----------------------------------

def test_requests_for_another_origin_are_refused(data: Path, tmp_path: Path) -> None:
    port = free_port()
    hq = Serve(data, "--public-origin", f"https://hq.example:{port}", port=port)
    unit = enrolled(data, tmp_path)
    path = unit.event("boot")
    try:
        conn = hq.conn()
        for origin, host, want in [
            (f"https://127.0.0.1:{port}", f"127.0.0.1:{port}", 421),  # not a configured origin
            ("https://other-hq.example", "other-hq.example", 421),  # signed for another headquarters
            (f"https://other-hq.example:{port}", f"hq.example:{port}", 401),  # the Host lies: signature fails
            (f"https://hq.example:{port}", f"HQ.example:{port}", 201),
        ]:
            h = signed(unit, "POST", origin, "/v1/uploads/", create_headers(path, 0, unit.device_id))
            conn.putrequest("POST", "/v1/uploads/", skip_host=True)
            for k, v in {**h, "Host": host, "Content-Length": "0"}.items():
                conn.putheader(k, v)
            conn.endheaders()
            r = conn.getresponse()
            body = r.read()
            assert r.status == want, (origin, host, body)
            if r.getheader("Connection") == "close":
                conn.close()
                conn = hq.conn()
        conn.close()
    finally:
        hq.stop()


# -- finding 9 (HTTP part): WWW-Authenticate, X-HTTP-Method-Override -----------------------------

def test_401_names_the_scheme_and_post_may_override_to_patch(data: Path, hq: Serve, tmp_path: Path) -> None:
    unit = enrolled(data, tmp_path)
    origin = f"https://127.0.0.1:{hq.port}"
    conn = hq.conn()
    conn.request("POST", "/v1/uploads/", body=b"", headers={"Tus-Resumable": "1.0.0", "Upload-Length": "5"})
    r = conn.getresponse()
    r.read()
    assert r.status == 401 and (r.getheader("WWW-Authenticate") or "").startswith("Signature ")
    path = unit.event("boot")
    data_bytes = path.read_bytes()
    conn.request("POST", "/v1/uploads/", headers=signed(unit, "POST", origin, "/v1/uploads/",
                                                          create_headers(path, 0, unit.device_id)))
    r = conn.getresponse()
    r.read()
    location = r.getheader("Location")
    assert r.status == 201 and location
    patch = {"Content-Type": "application/offset+octet-stream", "Upload-Offset": "0",
             "Upload-Checksum": "sha256 " + base64.b64encode(hashlib.sha256(data_bytes).digest()).decode()}
    as_post = signed(unit, "POST", origin, location, patch, data_bytes)  # @method is the acting one: PATCH
    conn.request("POST", location, body=data_bytes, headers={**as_post, "X-HTTP-Method-Override": "PATCH"})
    r = conn.getresponse()
    r.read()
    assert r.status == 401
    conn = hq.conn()
    as_patch = signed(unit, "PATCH", origin, location, patch, data_bytes)
    conn.request("POST", location, body=data_bytes, headers={**as_patch, "X-HTTP-Method-Override": "PATCH"})
    r = conn.getresponse()
    r.read()
    assert r.status == 204 and r.getheader("Bodycam-Receipt")
    conn.request("POST", location, body=b"", headers={**as_patch, "X-HTTP-Method-Override": "GET"})
    r = conn.getresponse()
    assert r.status == 400 and json.loads(r.read())["error"]["code"] == "bad-override"
    conn.close()


# -- finding 6: TLS -------------------------------------------------------------------------

def openssl_connects(port: int, *options: str) -> tuple[bool, str]:
    res = subprocess.run([require_tool("openssl"), "s_client", "-connect", f"127.0.0.1:{port}", *options],
                         input=b"", capture_output=True, timeout=30)
    out = res.stdout.decode("utf-8", "replace")
    return res.returncode == 0 and "Cipher is (NONE)" not in out, out


def test_tls_offers_aead_only(hq: Serve) -> None:
    ok, out = openssl_connects(hq.port)
    assert ok and "TLSv1.3" in out
    assert openssl_connects(hq.port, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256")[0]
    for cbc in ("ECDHE-ECDSA-AES128-SHA256", "ECDHE-ECDSA-AES256-SHA", "ECDHE-ECDSA-AES128-SHA"):
        assert not openssl_connects(hq.port, "-tls1_2", "-cipher", cbc)[0], cbc


def test_the_fips_profile_offers_only_approved_suites_and_groups(data: Path) -> None:
    hq = Serve(data, "--profile", "fips")
    try:
        ok, out = openssl_connects(hq.port, "-tls1_3")
        assert ok and re.search(r"TLS_AES_(128|256)_GCM", out), out
        assert not openssl_connects(hq.port, "-tls1_3", "-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256")[0]
        assert not openssl_connects(hq.port, "-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305")[0]
        assert not openssl_connects(hq.port, "-groups", "X25519")[0]
        assert openssl_connects(hq.port, "-groups", "P-384")[0]
    finally:
        hq.stop()


# -- operations: health, readiness, metrics --------------------------------------------------

def test_health_readiness_and_metrics(data: Path, tmp_path: Path) -> None:
    hq = Serve(data, "--metrics-listen", "127.0.0.1:0")
    unit = enrolled(data, tmp_path)
    origin = f"https://127.0.0.1:{hq.port}"
    try:
        conn = hq.conn()
        path = unit.event("boot")
        evidence = path.read_bytes()
        conn.request("POST", "/v1/uploads/", headers=signed(unit, "POST", origin, "/v1/uploads/",
                                                              create_headers(path, 0, unit.device_id)))
        r = conn.getresponse()
        r.read()
        location = r.getheader("Location") or ""
        patch = {"Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}
        conn.request("PATCH", location, body=evidence, headers=signed(unit, "PATCH", origin, location, patch, evidence))
        r = conn.getresponse()
        r.read()
        assert r.status == 204 and r.getheader("Bodycam-Receipt")
        beat = make_heartbeat({"battery_pct": 50}, unit.signer)
        conn.request("POST", "/v1/heartbeat", body=beat,
                     headers=signed(unit, "POST", origin, "/v1/heartbeat", {}, beat))
        r = conn.getresponse()
        r.read()
        assert r.status == 200
        conn.request("GET", "/healthz")
        r = conn.getresponse()
        assert r.status == 200 and json.loads(r.read())["status"] == "alive"
        conn.request("GET", "/readyz")
        r = conn.getresponse()
        assert r.status == 200 and json.loads(r.read())["checks"] == {"index": "ok", "store": "ok"}
        conn.request("GET", "/metrics")  # not on the public port
        r = conn.getresponse()
        r.read()
        assert r.status == 404
        statuses = []
        for _ in range(40):
            conn.request("GET", "/healthz")
            r = conn.getresponse()
            r.read()
            statuses.append(r.status)
        assert 429 in statuses  # probes are rate limited per source
        conn.close()
        assert hq.metrics_port is not None
        scrape = http.client.HTTPConnection("127.0.0.1", hq.metrics_port, timeout=10)
        scrape.request("GET", "/metrics")
        text = scrape.getresponse().read().decode()
        assert 'bodycam_hq_auth_refusals_total{reason="not-found"} 1.0' in text
        assert "bodycam_hq_ingest_queue_depth 0.0" in text
        assert 'bodycam_hq_ingest_seconds_count{outcome="stored"} 1.0' in text
        assert f"bodycam_hq_ingest_bytes_total {float(len(evidence))}" in text
        assert "bodycam_hq_receipts_total 1.0" in text and "bodycam_hq_heartbeat_seconds_count 1.0" in text
    finally:
        hq.stop()
    # health probes write no audit: only the service's own records, the enrolment, the upload, the refusal
    assert {a.event_type for a in hq.audit()} == {"service-start", "service-stop", "enroll", "upload-create",
                                                  "ingest", "auth"}
    refused = subprocess.run([str(BIN / "bodycam-hq"), "serve", "--data-dir", str(data), "--listen",
                              "127.0.0.1:0", "--metrics-listen", "0.0.0.0:9464"], capture_output=True, text=True)
    assert refused.returncode == 2 and "loopback only" in refused.stderr


def test_several_workers_on_the_sqlite_index_are_refused_with_the_reason(data: Path) -> None:
    res = subprocess.run([str(BIN / "bodycam-hq"), "serve", "--data-dir", str(data), "--listen", "127.0.0.1:0",
                          "--workers", "2"], capture_output=True, text=True)
    assert res.returncode == 2 and "SQLite" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_several_workers_over_postgresql_share_the_port_and_their_metrics(
        data: Path, tmp_path: Path, fresh_postgres_url: str) -> None:
    url, env = cli_url(fresh_postgres_url)
    assert run_hq("migrate", "--database-url", url, env=env).returncode == 0
    unit = ChainBuilder(tmp_path / "u2", device_id="unit-w1")
    pub = unit.write_device_pub(tmp_path / "unit-w1.pub")
    done = run_hq("enroll", "--data-dir", str(data), "--database-url", url, "--device-id", "unit-w1",
                  "--device-pub", str(pub), env=env)
    assert done.returncode == 0, done.stderr
    hq = Serve(data, "--database-url", url, "--workers", "2", "--metrics-listen", "127.0.0.1:0", env=env)
    try:
        children = Path(f"/proc/{hq.proc.pid}/task/{hq.proc.pid}/children").read_text().split()
        assert len(children) == 2  # the parent holds the lock and forks two workers
        found = re.search(r"metrics are summed from (\S+)", hq.log_path.read_text())
        assert found
        metrics_dir = Path(found.group(1))  # the private directory of the multiprocess mode
        assert metrics_dir.is_dir() and metrics_dir.stat().st_mode & 0o077 == 0
        origin = f"https://127.0.0.1:{hq.port}"
        for i in range(10):  # a fresh connection each: the kernel spreads them over the workers
            conn = hq.conn()
            conn.request("GET", f"/nowhere-{i}")
            assert conn.getresponse().status == 404
            conn.close()
        conn = hq.conn()
        path = unit.event("boot")
        evidence = path.read_bytes()
        conn.request("POST", "/v1/uploads/", headers=signed(unit, "POST", origin, "/v1/uploads/",
                                                              create_headers(path, 0, unit.device_id)))
        r = conn.getresponse()
        r.read()
        location = r.getheader("Location") or ""
        patch = {"Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}
        conn.request("PATCH", location, body=evidence,
                     headers=signed(unit, "PATCH", origin, location, patch, evidence))
        r = conn.getresponse()
        r.read()
        assert r.status == 204 and r.getheader("Bodycam-Receipt")
        conn.close()
        assert hq.metrics_port is not None
        scrape = http.client.HTTPConnection("127.0.0.1", hq.metrics_port, timeout=10)
        scrape.request("GET", "/metrics")
        text = scrape.getresponse().read().decode()
        assert 'bodycam_hq_requests_total{route="-",status="404"} 10.0' in text  # summed over the workers
        assert "bodycam_hq_receipts_total 1.0" in text
    finally:
        hq.stop()
    with SqlIndex.open(fresh_postgres_url) as index:
        events = [(a.event_type, a.outcome) for a in index.audit_log() if a.event_type.startswith("service")]
        refused = sum(int(a.detail["count"]) for a in index.audit_log("auth"))
    assert events == [("service-start", "ok"), ("service-stop", "ok")] and refused == 10
    assert not metrics_dir.exists()  # the parent removed its private multiprocess directory
