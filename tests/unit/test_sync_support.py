"""Test support for sync (no tests here): a CA and server certificate, a small fake tus server
over TLS on loopback that can misbehave on demand, a cutting TCP proxy, and an agent-like unit
(real evidence from ChainBuilder, indexed in a real Store)."""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import io
import ipaddress
import json
import random
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from agent.evidence.httpsig import NonceCache, SignatureError, verify_request
from agent.evidence.manifest import parse_manifest_record
from agent.evidence.receipt import encode_receipt_header, make_quarantine_notice, make_receipt, verify_heartbeat
from agent.evidence.segment import scan
from agent.store import Store
from agent.sync.client import Timeouts
from agent.sync.policy import Backoff
from agent.sync.worker import SyncSettings, SyncWorker
from tests.evidence_util import ChainBuilder
from tests.fakes import FakeClock

# ---- PKI ------------------------------------------------------------------------------------


@dataclass
class Pki:
    ca_pem: Path
    cert_pem: Path
    key_pem: Path


def make_pki(folder: Path, name: str = "hq") -> Pki:
    """A self-signed ECDSA P-256 CA and a server certificate for 127.0.0.1 and localhost."""
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pki = Pki(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    pki.ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki.cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.key_pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
    return pki


# ---- the fake headquarters ------------------------------------------------------------------


@dataclass
class Upload:
    id: str
    device_id: str
    seq: int
    sha256: str
    length: int
    data: bytearray = field(default_factory=bytearray)
    received_bytes: int = 0  # every body byte that arrived, partial chunks included
    patches: int = 0
    done: bool = False
    pending: int = 0  # answers left that say ingest is in progress


@dataclass
class Faults:
    """What the fake headquarters does wrong. Offsets are absolute within the file."""

    cut_at: list[int] = field(default_factory=list)  # drop the connection when a PATCH body reaches it
    cut_after_store: list[int] = field(default_factory=list)  # keep a chunk ending here, then drop
    wrong_offset_once: bool = False  # answer one PATCH with a wrong Upload-Offset
    head_offset_bonus: int = 0  # HEAD claims this many bytes more than it holds
    fail_500: int = 0  # answer the next N requests with 500
    slow_s: float = 0.0  # wait this long before answering a PATCH
    receipt: str = "good"  # good | forged | other-seq | other-manifest | other-device | missing | garbage
    reject_422: bool = False
    notice: str = "good"  # with reject_422: good | missing | forged | other-seq | other-file | garbage
    trickle_s: float = 0.0  # send every answer one byte per this many seconds
    short_body: bool = False  # announce a longer body than is sent, then close
    error_message: str = "test failure"  # the message of the 500s of fail_500
    auth: int = 0  # answer every request with this status (401/403) while set
    conflict_seq: set[int] = field(default_factory=set)  # 409 on create for these seqs
    on_patch: Callable[[Upload], None] | None = None
    ingest_pending: int = 0  # answer "Bodycam-Ingest: pending" to the completion and this many - 1 HEADs
    drop_unanswered: int = 0  # read and verify the next N requests, then close without an answer
    close_after_answer: bool = False  # close each connection after its answer, not saying so (idle close)


class FakeHq:
    """A small tus 1.0 server over TLS on 127.0.0.1 (port 0) that verifies signatures with the
    real httpsig module, keeps uploads in memory and issues real signed receipts."""

    def __init__(self, pki: Pki, device_keys: dict[str, ed25519.Ed25519PublicKey],
                 now_s: Callable[[], int] = lambda: int(time.time())) -> None:
        self.receipt_key = ed25519.Ed25519PrivateKey.generate()
        self.device_keys = device_keys
        self.now_s = now_s
        self.faults = Faults()
        self.uploads: dict[str, Upload] = {}
        self.evidence: dict[tuple[str, int], bytes] = {}
        self.heartbeats: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []
        self.trickled: list[tuple[int, int]] = []  # (bytes sent, bytes of the answer) per trickled answer
        self.lock = threading.Lock()
        self._nonces = NonceCache()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(pki.cert_pem), str(pki.key_pem))
        hq = self

        class Handler(_Handler):
            server_hq = hq

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def upload_for(self, seq: int) -> Upload | None:
        with self.lock:
            return next((u for u in self.uploads.values() if u.seq == seq), None)

    def receipt_for(self, up: Upload) -> str | None:
        mode = self.faults.receipt
        if mode == "missing":
            return None
        if mode == "garbage":
            return "bm90IGEgcmVjZWlwdA=="
        s = scan(io.BytesIO(bytes(up.data)))
        assert s.manifest_record is not None
        manifest_sha256 = parse_manifest_record(s.manifest_record).hash
        fields: dict[str, Any] = {
            "device_id": "someone-else" if mode == "other-device" else up.device_id,
            "seq": up.seq + 1 if mode == "other-seq" else up.seq,
            "manifest_sha256": "0" * 64 if mode == "other-manifest" else manifest_sha256,
            "file_sha256": up.sha256,
            "received_utc_ns": self.now_s() * 1_000_000_000,
            "chain_head": {"seq": up.seq, "hash": manifest_sha256},
            "contiguous_through": up.seq,
        }
        key = ed25519.Ed25519PrivateKey.generate() if mode == "forged" else self.receipt_key
        return encode_receipt_header(make_receipt(fields, key))


    def notice_for(self, up: Upload, code: str, reason: str) -> str | None:
        mode = self.faults.notice
        if mode == "missing":
            return None
        if mode == "garbage":
            return "bm90IGEgbm90aWNl"
        fields: dict[str, Any] = {
            "device_id": up.device_id,
            "seq": up.seq + 1 if mode == "other-seq" else up.seq,
            "file_sha256": "0" * 64 if mode == "other-file" else up.sha256,
            "received_sha256": hashlib.sha256(bytes(up.data)).hexdigest(),
            "upload_id": up.id,
            "code": code,
            "reason": reason,
            "quarantined_utc_ns": self.now_s() * 1_000_000_000,
        }
        key = ed25519.Ed25519PrivateKey.generate() if mode == "forged" else self.receipt_key
        return encode_receipt_header(make_quarantine_notice(fields, key))


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # connections cut on purpose end in SSL and socket errors: expected, not news


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_hq: FakeHq

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass

    # ---- plumbing -------------------------------------------------------------------------

    def _reply(self, status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> None:
        if self.server_hq.faults.trickle_s:
            self._trickle(status, headers or {}, body)
            return
        self.send_response(status)
        self.send_header("Tus-Resumable", "1.0.0")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        short = self.server_hq.faults.short_body and bool(body)
        self.send_header("Content-Length", str(len(body) + 10 if short else len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)
        if self.server_hq.faults.close_after_answer:
            self.close_connection = True
        if short:  # a clean TLS close (close_notify), so the client sees a plain end of stream
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.wfile.flush()
                self.connection.unwrap()

    def _trickle(self, status: int, headers: dict[str, str], body: bytes) -> None:
        """The whole answer, one byte at a time: every read is quick, the answer never is."""
        hq = self.server_hq
        lines = [f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}", "Tus-Resumable: 1.0.0",
                 *(f"{k}: {v}" for k, v in headers.items()), f"Content-Length: {len(body)}", "", ""]
        answer = "\r\n".join(lines).encode() + (body if self.command != "HEAD" else b"")
        sent = 0
        try:
            for i in range(len(answer)):
                self.wfile.write(answer[i:i + 1])
                self.wfile.flush()
                sent += 1
                time.sleep(hq.faults.trickle_s)
        except OSError:
            self.close_connection = True
        hq.trickled.append((sent, len(answer)))

    def _error(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        self._reply(status, {"Content-Type": "application/json", **(headers or {})},
                    json.dumps({"error": {"code": code, "message": message}}).encode())

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _authenticate(self, body: bytes) -> str | None:
        hq = self.server_hq
        if hq.faults.auth:
            self._error(hq.faults.auth, "unauthorised", "device revoked (test)")
            return None
        if hq.faults.fail_500 > 0:
            hq.faults.fail_500 -= 1
            self._error(500, "internal", hq.faults.error_message)
            return None
        try:
            target = f"https://{self.headers['Host']}{self.path}"
            device = verify_request(self.command, target, dict(self.headers.items()), body, hq.device_keys.get,
                                    hq.now_s(), hq._nonces.seen)
        except SignatureError as e:
            self._error(401, e.reason, e.message)
            return None
        if hq.faults.drop_unanswered > 0:  # as a load balancer closing an idle connection mid-request
            hq.faults.drop_unanswered -= 1
            self._drop()
            return None
        return device

    def _upload(self) -> Upload | None:
        up = self.server_hq.uploads.get(self.path.rsplit("/", 1)[-1])
        if up is None:
            self._error(404, "not-found", "no such upload")
        return up

    # ---- tus ------------------------------------------------------------------------------

    def do_POST(self) -> None:
        hq = self.server_hq
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        hq.requests.append(("POST", self.path))
        device = self._authenticate(body)
        if device is None:
            return
        if self.path == "/v1/heartbeat":
            hq.heartbeats.append(verify_heartbeat(body, hq.device_keys[device]))
            self._reply(200, {"Content-Type": "application/json"},
                        json.dumps({"ok": True, "server_utc_ns": hq.now_s() * 1_000_000_000}).encode())
            return
        meta = {k: base64.b64decode(v).decode() for k, v in
                (item.split(" ") for item in self.headers["Upload-Metadata"].split(","))}
        seq = int(meta["seq"])
        if seq in hq.faults.conflict_seq:
            self._error(409, "conflict", "another file is stored for this seq")
            return
        with hq.lock:
            up = next((u for u in hq.uploads.values() if (u.device_id, u.seq, u.sha256) ==
                       (device, seq, meta["sha256"])), None)
            if up is None:
                up = Upload(uuid.uuid4().hex, device, seq, meta["sha256"], int(self.headers["Upload-Length"]))
                hq.uploads[up.id] = up
        self._reply(201, {"Location": f"/v1/uploads/{up.id}"})

    def do_HEAD(self) -> None:
        hq = self.server_hq
        hq.requests.append(("HEAD", self.path))
        if self._authenticate(b"") is None:
            return
        up = self._upload()
        if up is not None:
            headers = {"Upload-Offset": str(len(up.data) + hq.faults.head_offset_bonus),
                       "Upload-Length": str(up.length), "Cache-Control": "no-store"}
            if up.pending:
                up.pending -= 1
                headers["Bodycam-Ingest"] = "pending"
            self._reply(200, headers)

    def do_PATCH(self) -> None:
        hq = self.server_hq
        hq.requests.append(("PATCH", self.path))
        up = hq.uploads.get(self.path.rsplit("/", 1)[-1])
        size = int(self.headers.get("Content-Length", "0"))
        offset = int(self.headers["Upload-Offset"])
        cut = next((c for c in hq.faults.cut_at if offset < c < offset + size), None) if up else None
        if cut is not None and up is not None:
            hq.faults.cut_at.remove(cut)
            got = self.rfile.read(cut - offset)
            up.received_bytes += len(got)
            self._drop()
            return
        body = self.rfile.read(size)
        if up is not None:
            up.received_bytes += len(body)
        if self._authenticate(body) is None:
            return
        up = self._upload()
        if up is None:
            return
        up.patches += 1
        if hq.faults.on_patch is not None:
            hq.faults.on_patch(up)
        if offset != len(up.data):
            self._error(409, "offset", f"offset is {len(up.data)}")
            return
        if hashlib.sha256(body).digest() != _checksum(self.headers["Upload-Checksum"]):
            self._error(460, "checksum", "checksum mismatch")
            return
        up.data += body
        end = len(up.data)
        if end in hq.faults.cut_after_store:
            hq.faults.cut_after_store.remove(end)
            self._drop()
            return
        if hq.faults.slow_s:
            time.sleep(hq.faults.slow_s)
        reported = end
        if hq.faults.wrong_offset_once:
            hq.faults.wrong_offset_once = False
            reported = end + 7
        if end < up.length:
            self._reply(204, {"Upload-Offset": str(reported)})
            return
        if hq.faults.reject_422:
            code, reason = "bad-signature", "manifest signature does not verify (test)"
            notice = hq.notice_for(up, code, reason)
            self._error(422, code, reason, {} if notice is None else {"Bodycam-Quarantine": notice})
            return
        if not up.done and hq.faults.ingest_pending:
            up.pending = hq.faults.ingest_pending
        up.done = True
        hq.evidence[(up.device_id, up.seq)] = bytes(up.data)
        if up.pending:
            up.pending -= 1
            self._reply(204, {"Upload-Offset": str(reported), "Bodycam-Ingest": "pending"})
            return
        receipt = hq.receipt_for(up)
        headers = {"Upload-Offset": str(reported)}
        if receipt is not None:
            headers["Bodycam-Receipt"] = receipt
        self._reply(204, headers)

    def do_DELETE(self) -> None:
        if self._authenticate(b"") is None:
            return
        up = self._upload()
        if up is not None:
            del self.server_hq.uploads[up.id]
            self._reply(204)


def _checksum(value: str) -> bytes:
    return base64.b64decode(value.split(" ")[1])


# ---- a cutting proxy ------------------------------------------------------------------------


class CuttingProxy:
    """A TCP relay on 127.0.0.1 (TLS passes through untouched) that closes each connection after
    a random number of client-to-server bytes, until ``cuts`` connections have been cut."""

    def __init__(self, target_port: int, rng: random.Random, cuts: int, max_bytes: int) -> None:
        self._target = target_port
        self._rng = rng
        self.cuts_left = cuts
        self._max = max_bytes
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self.cut_offsets: list[int] = []
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._stop = True
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self._target))
            limit = None
            if self.cuts_left > 0:
                self.cuts_left -= 1
                limit = self._rng.randint(1, self._max)
                self.cut_offsets.append(limit)
            threading.Thread(target=self._pump, args=(client, server, limit), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, None), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, limit: int | None) -> None:
        sent = 0
        try:
            while True:
                want = 65536 if limit is None else min(65536, limit - sent)
                data = src.recv(want) if want > 0 else b""
                if not data:
                    break
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


# ---- a peer that trickles its TLS handshake --------------------------------------------------


class SlowTlsPeer:
    """A TCP server on 127.0.0.1 that answers a ClientHello with the header of a 16 KiB handshake
    record, then one byte of it every ``delay_s`` seconds: no read ever times out, the handshake
    never ends. It gives up (closes) after ``give_up_s``; ``sent`` counts the record's bytes."""

    def __init__(self, delay_s: float, give_up_s: float) -> None:
        self._delay_s = delay_s
        self._give_up_s = give_up_s
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self.sent: list[int] = []  # per connection, once it ended
        self.gave_up = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        sent = 0
        end = time.monotonic() + self._give_up_s
        with conn:
            try:
                conn.recv(65536)  # the ClientHello
                conn.sendall(b"\x16\x03\x03\x40\x00")  # handshake record, 16384 bytes follow
                while time.monotonic() < end:
                    conn.sendall(b"\x00")
                    sent += 1
                    time.sleep(self._delay_s)
                self.gave_up += 1
            except OSError:
                pass
        self.sent.append(sent)


# ---- an agent-like unit ---------------------------------------------------------------------


def index_file(store: Store, path: Path, priority: int | None = None) -> int:
    """Index a sealed evidence file as the agent does (agent.recovery's indexing, condensed)."""
    with path.open("rb") as fh:
        s = scan(fh)
    assert s.manifest_record is not None
    signed = parse_manifest_record(s.manifest_record)
    m, t = signed.manifest, signed.manifest["time"]
    common: dict[str, Any] = {"device_id": m["device_id"], "boot_id": m["boot_id"], "path": f"segments/{path.name}",
                              "manifest_sha256": signed.hash, "size_bytes": path.stat().st_size,
                              "flags": m["flags"]}
    if m["type"] == "event":
        store.record_event_entry(signed.seq, recording_id=None, mono_ns=t["mono_start_ns"],
                                 utc_ns=t["utc_start_ns"], priority=priority or 0, **common)
    else:
        store.record_segment_entry(
            signed.seq, recording_id=m.get("recording_id"), mono_start_ns=t["mono_start_ns"],
            mono_end_ns=t["mono_end_ns"], utc_start_ns=t["utc_start_ns"], utc_end_ns=t["utc_end_ns"],
            ciphertext_sha256=m["ciphertext"]["sha256"], chunks=m["ciphertext"]["chunks"],
            priority=priority or 0, **common)
    return signed.seq


@dataclass
class Unit:
    data_dir: Path
    clock: FakeClock
    store: Store
    chain: ChainBuilder
    pki: Pki
    hq: FakeHq
    alarms: list[tuple[str, str]] = field(default_factory=list)

    def add_segment(self, size: int = 200_000, priority: int = 0) -> int:
        path = self.chain.segment(payload=random.Random(self.chain.seq).randbytes(size))
        return index_file(self.store, path, priority)

    def add_event(self, name: str = "boot", priority: int = 0) -> int:
        return index_file(self.store, self.chain.event(name), priority)

    def file(self, seq: int) -> bytes:
        seg = self.store.segment(seq)
        assert seg is not None
        return (self.data_dir / seg.path).read_bytes()

    def worker(self, url: str | None = None, **settings: Any) -> SyncWorker:
        defaults: dict[str, Any] = {"chunk_bytes": 64 * 1024, "backoff": Backoff(0.05, 1.0),
                                    "timeouts": Timeouts(connect_s=2.0, io_s=2.0, ingest_s=2.0)}
        return SyncWorker(
            self.store, self.data_dir, self.chain.signer, self.chain.device_id, url or self.hq.url,
            self.pki.ca_pem, self.hq.receipt_key.public_key(), self.clock,
            SyncSettings(**{**defaults, **settings}),
            lambda: {"battery": {"pct": 87.5, "charging": False}, "recording": {"state": "READY"}},
            on_alarm=lambda kind, message: self.alarms.append((kind, message)),
            rng=random.Random(42),
        )

    def audit(self, action: str | None = None) -> list[Any]:
        tail = self.store.audit_tail(10_000)
        return [a for a in tail if a.actor == "sync" and (action is None or a.action == action)]


def make_unit(tmp_path: Path) -> Unit:
    data_dir = tmp_path / "unit"
    clock = FakeClock()
    chain = ChainBuilder(data_dir / "segments", device_id="unit-sync-1")
    store = Store(data_dir / "index.sqlite", clock)
    pki = make_pki(tmp_path / "pki")
    hq = FakeHq(pki, {chain.device_id: chain.signer.public_key()}, now_s=lambda: clock.utc_ns() // 1_000_000_000)
    return Unit(data_dir, clock, store, chain, pki, hq)


def wait_for(predicate: Callable[[], object], timeout_s: float = 10.0) -> bool:
    """Poll ``predicate`` in real time until it holds (True) or ``timeout_s`` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def drive(worker: SyncWorker, clock: FakeClock, passes: int = 50, until: Callable[[], bool] | None = None) -> int:
    """Run passes, letting fake time pass between them as the worker asks; return passes run."""
    for n in range(1, passes + 1):
        wait_s = worker.run_once()
        if until is not None and until():
            return n
        clock.advance(max(wait_s, 0.001))
    return passes
