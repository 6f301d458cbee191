"""The headquarters service over real HTTPS on 127.0.0.1: enrol, upload with tus, receipts, export.

The server runs in-process on a thread (bound to port 0); the client is a small hand-written tus
client over http.client, pinned to the headquarters CA and signing each request with httpsig.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.evidence.format import segment_filename
from agent.evidence.httpsig import new_nonce, sign_request
from agent.evidence.keys import load_receipt_public
from agent.evidence.receipt import decode_receipt_header, expect_quarantine_notice, expect_receipt, make_heartbeat
from agent.evidence.segment import scan
from hq.app import build_service, open_index
from hq.cli import main as hq_main
from hq.index import SqliteIndex
from hq.keygen import keygen
from hq.serve import REQUEST_DEADLINE_S, HqServer
from hq.tls import server_tls_context
from hq.tus import UploadMeta, encode_metadata
from tests.evidence_util import ChainBuilder, MemorySigner

BIN = Path(sys.executable).parent

Reply = tuple[int, dict[str, str], bytes]


@dataclass
class Hq:
    data: Path
    keys: Path
    server: HqServer
    index: SqliteIndex
    thread: threading.Thread

    @property
    def port(self) -> int:
        return self.server.port

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)
        self.index.close()


def start_hq(data: Path, request_deadline_s: float = REQUEST_DEADLINE_S) -> Hq:
    keys = data / "keys"
    index = open_index(data)
    service = build_service(data, keys, index)
    server = HqServer(("127.0.0.1", 0), service, server_tls_context(keys / "server.pem", keys / "server.key"),
                          request_deadline_s)
    thread = threading.Thread(target=server.serve_forever, name="hq-test", daemon=True)
    thread.start()
    return Hq(data, keys, server, index, thread)


@pytest.fixture
def hq(tmp_path: Path) -> Iterator[Hq]:
    data = tmp_path / "H"
    keygen(data / "keys")
    h = start_hq(data)
    yield h
    h.stop()


class TusClient:
    """The unit's side, by hand: tus 1.0 over HTTPS pinned to ca.pem, every request signed."""

    def __init__(self, port: int, ca: Path, signer: MemorySigner, device_id: str) -> None:
        self.port = port
        self.signer = signer
        self.device_id = device_id
        self.ctx = ssl.create_default_context(cafile=str(ca))
        self.conn = http.client.HTTPSConnection("127.0.0.1", port, context=self.ctx, timeout=30)
        self.last_sent: tuple[str, str, dict[str, str], bytes] | None = None

    def close(self) -> None:
        self.conn.close()

    def send(self, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> Reply:
        self.last_sent = (method, path, headers, body)
        self.conn.request(method, path, body=body if body or method in ("POST", "PATCH") else None, headers=headers)
        r = self.conn.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data

    def request(self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b"") -> Reply:
        h = {"Tus-Resumable": "1.0.0", **(headers or {})}
        uri = f"https://127.0.0.1:{self.port}{path}"
        h.update(sign_request(method, uri, h, body, self.device_id, self.signer, int(time.time()), new_nonce()))
        return self.send(method, path, h, body)

    def create(self, path: Path, seq: int) -> Reply:
        data = path.read_bytes()
        meta = UploadMeta(self.device_id, seq, path.name, hashlib.sha256(data).hexdigest())
        return self.request(
            "POST", "/v1/uploads/", {"Upload-Length": str(len(data)), "Upload-Metadata": encode_metadata(meta)}
        )

    def patch(self, location: str, offset: int, chunk: bytes) -> Reply:
        digest = base64.b64encode(hashlib.sha256(chunk).digest()).decode()
        headers = {
            "Content-Type": "application/offset+octet-stream",
            "Upload-Offset": str(offset),
            "Upload-Checksum": f"sha256 {digest}",
        }
        return self.request("PATCH", location, headers, chunk)

    def upload(self, path: Path, seq: int, chunk_bytes: int = 64 * 1024) -> Reply:
        status, headers, body = self.create(path, seq)
        assert status == 201, body
        location = headers["location"]
        data = path.read_bytes()
        offset = int(headers.get("upload-offset", "0"))
        reply: Reply = (status, headers, body)
        while offset < len(data):
            reply = self.patch(location, offset, data[offset : offset + chunk_bytes])
            if reply[0] != 204:
                return reply
            offset = int(reply[1]["upload-offset"])
        return reply


def enroll(hq: Hq, builder: ChainBuilder, tmp: Path) -> None:
    pub = builder.write_device_pub(tmp / f"{builder.device_id}.pub")
    assert (
        hq_main(["enroll", "--data-dir", str(hq.data), "--device-id", builder.device_id, "--device-pub", str(pub)]) == 0
    )


def client_for(hq: Hq, builder: ChainBuilder) -> TusClient:
    return TusClient(hq.port, hq.keys / "ca.pem", builder.signer, builder.device_id)


def manifest_hash(path: Path) -> str:
    with path.open("rb") as fh:
        record = scan(fh).manifest_record
    assert record is not None
    return hashlib.sha256(record[:-64]).hexdigest()


def test_incident_uploads_with_receipts_and_exports_verifiably(hq: Hq, tmp_path: Path) -> None:
    unit = ChainBuilder(tmp_path / "unit", device_id="unit-41")
    paths = unit.incident(segments=3)
    enroll(hq, unit, tmp_path)
    client = client_for(hq, unit)
    receipt_pub = load_receipt_public(hq.keys / "hq.pub")
    # Priority upload first (seq 3), then the rest: the contiguous run only grows once 0.. arrive.
    order = [3, 0, 1, 2, 4, 5, 6]
    for seq in order:
        status, headers, body = client.upload(paths[seq], seq, chunk_bytes=48 * 1024)
        assert status == 204, body
        assert headers["tus-resumable"] == "1.0.0"
        receipt = expect_receipt(
            decode_receipt_header(headers["bodycam-receipt"]), receipt_pub, "unit-41", seq, manifest_hash(paths[seq])
        )
        assert receipt["file_sha256"] == hashlib.sha256(paths[seq].read_bytes()).hexdigest()
        stored = hq.data / "evidence" / "unit-41" / segment_filename(seq)
        assert stored.read_bytes() == paths[seq].read_bytes()
        assert receipt["contiguous_through"] == {3: -1, 0: 0, 1: 1, 2: 3}.get(seq, seq)
    assert receipt["chain_head"] == {"seq": 6, "hash": manifest_hash(paths[6])}

    # Uploading an entry again is idempotent: creation answers with the receipt, nothing is sent.
    status, headers, _ = client.create(paths[2], 2)
    assert status == 201 and headers["upload-offset"] == str(paths[2].stat().st_size)
    expect_receipt(
        decode_receipt_header(headers["bodycam-receipt"]), receipt_pub, "unit-41", 2, manifest_hash(paths[2])
    )
    client.close()

    out = tmp_path / "export"
    assert hq_main(["export", "--data-dir", str(hq.data), "--device", "unit-41", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*.bcs")) == [segment_filename(i) for i in range(7)]
    assert len(list((out / "receipts").glob("*.receipt"))) == 7
    for i in range(7):
        receipt_bytes = (out / "receipts" / f"{segment_filename(i)[:-4]}.receipt").read_bytes()
        expect_receipt(
            receipt_bytes, load_receipt_public(out / "receipts" / "hq.pub"), "unit-41", i, manifest_hash(paths[i])
        )
    verify = subprocess.run(
        [str(BIN / "bodycam"), "verify", str(out), "--device-pub", str(out / "device.pub")],
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr

    events = [(a.event_type, a.outcome) for a in hq.index.audit_log()]
    assert events.count(("ingest", "ok")) == 7
    assert ("enroll", "ok") in events and ("export", "ok") in events


def test_tampered_segment_is_refused_quarantined_and_audited(hq: Hq, tmp_path: Path) -> None:
    unit = ChainBuilder(tmp_path / "unit", device_id="unit-42")
    paths = unit.incident(segments=1)
    enroll(hq, unit, tmp_path)
    bad = bytearray(paths[2].read_bytes())
    bad[len(bad) // 2] ^= 0x40
    paths[2].write_bytes(bytes(bad))
    client = client_for(hq, unit)
    status, headers, body = client.upload(paths[2], 2)
    client.close()
    assert status == 422
    assert json.loads(body)["error"]["code"] == "verification-failed"
    assert "bodycam-receipt" not in headers
    # The refusal is signed with the receipt key and names exactly the file sent: the unit
    # quarantines its entry on nothing less.
    notice = expect_quarantine_notice(decode_receipt_header(headers["bodycam-quarantine"]),
                                      load_receipt_public(hq.keys / "hq.pub"), "unit-42", 2,
                                      hashlib.sha256(bytes(bad)).hexdigest())
    assert notice["code"] == "verification-failed" and notice["received_sha256"] == notice["file_sha256"]
    assert not (hq.data / "evidence" / "unit-42" / segment_filename(2)).exists()
    [q] = hq.index.quarantined("unit-42")
    assert Path(q.location).read_bytes() == bytes(bad)
    assert json.loads(Path(q.location).with_suffix(".json").read_text())["code"] == "verification-failed"
    assert [(a.actor, a.outcome) for a in hq.index.audit_log("ingest")] == [("unit-42", "quarantined")]


def test_replayed_request_is_refused(hq: Hq, tmp_path: Path) -> None:
    unit = ChainBuilder(tmp_path / "unit", device_id="unit-43")
    path = unit.event("boot")
    enroll(hq, unit, tmp_path)
    client = client_for(hq, unit)
    status, headers, _ = client.create(path, 0)
    assert status == 201
    assert client.last_sent is not None
    method, target, sent_headers, body = client.last_sent
    status, _, reply = client.send(method, target, sent_headers, body)
    client.close()
    assert status == 401
    assert "nonce" in json.loads(reply)["error"]["message"]
    [refused] = hq.index.audit_log("auth")
    # The claimed key id is not an actor (security review, finding 7): it is a detail.
    assert (refused.actor, refused.outcome, refused.detail["reason"]) == ("unauthenticated", "refused", "replay")
    assert refused.detail["claimed_key_id"] == "unit-43"


def test_unknown_and_revoked_devices_are_refused(hq: Hq, tmp_path: Path) -> None:
    unit = ChainBuilder(tmp_path / "unit", device_id="unit-44")
    path = unit.event("boot")
    client = client_for(hq, unit)
    assert client.create(path, 0)[0] == 401
    enroll(hq, unit, tmp_path)
    assert client.create(path, 0)[0] == 201
    assert hq_main(["revoke", "--data-dir", str(hq.data), "--device-id", "unit-44"]) == 0
    assert client.create(path, 0)[0] == 401
    client.close()
    # Refusals of one source for one reason are aggregated (finding 1): the first is written at
    # once, the rest counted into one record when the window ends (here: flushed now).
    hq.server.service.refusals.flush()
    counted = [(a.detail["reason"], a.detail["count"]) for a in hq.index.audit_log("auth")]
    assert counted == [("unknown-key", 1), ("unknown-key", 1)]


def test_upload_resumes_after_a_restart_of_the_service(tmp_path: Path) -> None:
    data = tmp_path / "H"
    keygen(data / "keys")
    first = start_hq(data)
    unit = ChainBuilder(tmp_path / "unit", device_id="unit-45")
    path = unit.event("boot")
    path = unit.segment()  # seq 1, about 150 kB
    enroll(first, unit, tmp_path)
    client = client_for(first, unit)
    _, headers, _ = client.create(path, 1)
    location = headers["location"]
    data_bytes = path.read_bytes()
    assert client.patch(location, 0, data_bytes[:50_000])[0] == 204
    client.close()
    first.stop()

    second = start_hq(data)
    try:
        client = client_for(second, unit)
        status, headers, _ = client.request("HEAD", location)
        assert (status, headers["upload-offset"], headers["upload-length"]) == (200, "50000", str(len(data_bytes)))
        # The same chunk sent twice after a cut: the offset tells the unit where to go on.
        status, headers, _ = client.patch(location, 0, data_bytes[:50_000])
        assert (status, headers["upload-offset"]) == (409, "50000")
        status, headers, _ = client.patch(location, 50_000, data_bytes[50_000:])
        assert status == 204 and "bodycam-receipt" in headers
        status, headers, _ = client.request("HEAD", location)
        assert headers["upload-offset"] == str(len(data_bytes)) and "bodycam-receipt" in headers
        client.close()
    finally:
        second.stop()


def test_heartbeat_is_kept_as_proof(hq: Hq, tmp_path: Path) -> None:
    unit = ChainBuilder(tmp_path / "unit", device_id="unit-46")
    enroll(hq, unit, tmp_path)
    client = client_for(hq, unit)
    body = make_heartbeat({"battery_pct": 71, "recording": True, "backlog": 3}, unit.signer)
    status, headers, reply = client.request("POST", "/v1/heartbeat", {"Content-Type": "application/json"}, body)
    client.close()
    assert status == 200, reply
    assert json.loads(reply)["ok"] is True
    device = hq.index.device("unit-46")
    assert device is not None and device.last_status == {"backlog": 3, "battery_pct": 71, "recording": True}
    assert [b for _, b in hq.index.heartbeats("unit-46")] == [body]


def test_options_and_errors_are_json(hq: Hq, tmp_path: Path) -> None:
    ctx = ssl.create_default_context(cafile=str(hq.keys / "ca.pem"))
    conn = http.client.HTTPSConnection("127.0.0.1", hq.port, context=ctx, timeout=30)
    conn.request("OPTIONS", "/v1/uploads/")
    r = conn.getresponse()
    r.read()
    assert r.status == 204
    assert r.getheader("Tus-Extension") == "creation,checksum,termination,expiration"
    assert r.getheader("Tus-Checksum-Algorithm") == "sha1,sha256"
    conn.request("POST", "/v1/uploads/", body=b"", headers={"Tus-Resumable": "1.0.0", "Upload-Length": "10"})
    r = conn.getresponse()
    assert r.status == 401 and json.loads(r.read())["error"]["code"] == "unauthorized"
    conn.request("GET", "/nowhere")
    r = conn.getresponse()
    assert r.status == 404 and json.loads(r.read())["error"]["code"] == "not-found"
    conn.close()


def test_serve_command_refuses_remote_addresses_and_stops_on_sigterm(tmp_path: Path) -> None:
    data = tmp_path / "H"
    keygen(data / "keys")
    exe = str(BIN / "bodycam-hq")
    refused = subprocess.run([exe, "serve", "--data-dir", str(data), "--listen", "0.0.0.0:0"], capture_output=True)
    assert refused.returncode == 2 and b"loopback" in refused.stderr
    proc = subprocess.Popen(
        [exe, "serve", "--data-dir", str(data), "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("bodycam-hq: serving https://127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1].split("/")[0])
        ctx = ssl.create_default_context(cafile=str(data / "keys" / "ca.pem"))
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=30)
        conn.request("OPTIONS", "/v1/uploads/")
        assert conn.getresponse().status == 204
        conn.close()
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with SqliteIndex(data / "index.sqlite") as index:
        assert [a.event_type for a in index.audit_log()] == ["service-start", "service-stop"]


def test_an_oversized_body_is_refused_before_it_is_read(hq: Hq) -> None:
    ctx = ssl.create_default_context(cafile=str(hq.keys / "ca.pem"))
    conn = http.client.HTTPSConnection("127.0.0.1", hq.port, context=ctx, timeout=30)
    conn.putrequest("PATCH", "/v1/uploads/" + "0" * 32)
    conn.putheader("Tus-Resumable", "1.0.0")
    conn.putheader("Content-Length", str(64 * 1024 * 1024))
    conn.endheaders()  # and no body at all: the answer must not wait for it
    r = conn.getresponse()
    assert r.status == 413 and json.loads(r.read())["error"]["code"] == "too-large"
    assert r.getheader("Connection") == "close"
    conn.close()


def test_a_client_trickling_its_request_is_cut_at_the_deadline(tmp_path: Path) -> None:
    # The mirror of the unit's deadline: a slow (or slowloris) client cannot hold a service thread.
    keygen(tmp_path / "H" / "keys")
    hq = start_hq(tmp_path / "H", request_deadline_s=0.5)
    request = b"OPTIONS /v1/uploads/ HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\n\r\n"
    try:
        ctx = ssl.create_default_context(cafile=str(hq.keys / "ca.pem"))
        with socket.create_connection(("127.0.0.1", hq.port), 5) as raw, \
                ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            try:
                for i in range(len(request)):  # one byte every 50 ms: every read is quick, the request is not
                    tls.sendall(request[i:i + 1])
                    time.sleep(0.05)
                answer = tls.recv(65536)
            except OSError:
                answer = b""
        assert not answer.startswith(b"HTTP/1.1"), answer
    finally:
        hq.stop()
