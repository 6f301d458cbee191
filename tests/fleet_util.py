"""A fleet of headquarters nodes, and simulated units, for the fleet tests and the bench.

:func:`running_fleet` starts N ``bodycam-hq serve`` nodes over one PostgreSQL database and one S3
store with Object Lock (both given: tests/pg_util.py, tests/s3_util.py start real ones), behind a
real HAProxy terminating TLS (tests/lb_util.py), optionally each node pinned to its own CPU.

A :class:`SimUnit` is what a unit is to headquarters' sync protocol: a device id and an Ed25519
device key, talking through the unit's own :class:`agent.sync.client.HqClient` (RFC 9421
signatures, canonical signed heartbeat bodies). Nothing here records media; uploads in the fleet
tests use sealed segments from :mod:`tests.evidence_util`.

:func:`heartbeat_storm` drives many units from a bounded thread pool for a bounded time and
returns every request's latency and outcome, so tests assert on counts (every heartbeat answered,
none lost) and the bench reports the rates and percentiles.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import hashlib
import http.client
import os
import signal
import ssl
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.evidence.httpsig import new_nonce, sign_request
from agent.evidence.keys import fingerprint, public_der
from agent.sync.client import HqClient, Timeouts
from agent.sync.heartbeat import heartbeat_body
from drivers.system_clock import SystemClock
from hal.keystore import KeyStore
from hq.app import open_index
from hq.keygen import keygen
from hq.tus import UploadMeta, encode_metadata
from tests.gpsd_util import free_port
from tests.lb_util import HaProxy

BIN = Path(sys.executable).parent
SETTLE_DEADLINE_S = 60.0  # a cut upload resumed, a receipt collected


class MemoryKeyStore:
    """A device key held in memory (``hal.keystore.KeyStore``), for simulated units only."""

    def __init__(self, key: ed25519.Ed25519PrivateKey | None = None) -> None:
        self._key = key or ed25519.Ed25519PrivateKey.generate()

    def public_key_raw(self) -> bytes:
        return self._key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def public_key(self) -> ed25519.Ed25519PublicKey:
        return self._key.public_key()

    def public_pem(self) -> str:
        return self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")


@dataclass
class SimUnit:
    device_id: str
    keystore: MemoryKeyStore = field(default_factory=MemoryKeyStore)
    position: tuple[float, float] | None = None  # (lat_deg, lon_deg) reported as a GNSS fix

    def client(self, base_url: str, ca_path: Path) -> HqClient:
        return HqClient(base_url, ca_path, self.device_id, self.keystore, SystemClock(),
                        Timeouts(connect_s=10.0, request_s=30.0))

    def status(self, n: int) -> dict[str, object]:
        """A plausible heartbeat status; ``n`` makes each one different."""
        status: dict[str, object] = {
            "recording": {"state": "ready" if n % 7 else "recording"},
            "storage": {"level": "ok", "free_bytes": 40_000_000_000 - n},
            "battery": {"percent": 80},
            "sync": {"backlog_segments": n % 3},
        }
        if self.position is not None:
            status["gnss"] = {"mode": 3, "lat_deg": self.position[0], "lon_deg": self.position[1]}
        return status


def sim_units(count: int, prefix: str = "sim") -> list[SimUnit]:
    return [SimUnit(f"{prefix}-{i:04d}") for i in range(count)]


@dataclass(frozen=True)
class Beat:
    device_id: str
    ok: bool
    latency_s: float
    error: str = ""


@dataclass
class StormResult:
    beats: list[Beat]
    wall_s: float

    @property
    def ok(self) -> list[Beat]:
        return [b for b in self.beats if b.ok]

    @property
    def failed(self) -> list[Beat]:
        return [b for b in self.beats if not b.ok]

    def percentile_s(self, q: float) -> float | None:
        lat = sorted(b.latency_s for b in self.ok)
        if not lat:
            return None
        return lat[min(len(lat) - 1, int(q * len(lat)))]

    def summary(self) -> dict[str, float | int | None]:
        lat = [b.latency_s for b in self.ok]
        return {
            "heartbeats": len(self.beats),
            "answered_ok": len(lat),
            "failed": len(self.failed),
            "per_s": round(len(lat) / self.wall_s, 1) if self.wall_s > 0 else None,
            "p50_ms": round(statistics.median(lat) * 1000, 1) if lat else None,
            "p99_ms": round((self.percentile_s(0.99) or 0) * 1000, 1) if lat else None,
        }


def heartbeat_storm(units: Sequence[SimUnit], base_url: str, ca_path: Path, *, rounds: int,
                    interval_s: float, threads: int = 32, stop: threading.Event | None = None) -> StormResult:
    """Each unit sends ``rounds`` heartbeats ``interval_s`` apart (the units' phases spread over the
    interval), from ``threads`` workers each owning a slice of the units. Bounded: at most
    ``len(units) * rounds`` requests, and ``stop`` ends it early."""
    stop = stop or threading.Event()
    slices = [units[i::threads] for i in range(threads)]
    started = time.monotonic()

    def drive(mine: Iterable[SimUnit], offset: int) -> list[Beat]:
        mine = list(mine)
        clients = {u.device_id: u.client(base_url, ca_path) for u in mine}
        out: list[Beat] = []
        try:
            for r in range(rounds):
                for k, unit in enumerate(mine):
                    if stop.is_set():
                        return out
                    due = started + r * interval_s + (offset + k * threads) * interval_s / max(1, len(units))
                    delay = due - time.monotonic()
                    if delay > 0 and stop.wait(delay):
                        return out
                    t0 = time.monotonic()
                    try:
                        clients[unit.device_id].heartbeat(heartbeat_body(unit.status(r), unit.keystore))
                        out.append(Beat(unit.device_id, True, time.monotonic() - t0))
                    except Exception as exc:  # every failure is a figure, not a crash of the storm
                        out.append(Beat(unit.device_id, False, time.monotonic() - t0, str(exc)[:200]))
                        clients[unit.device_id].close()
        finally:
            for c in clients.values():
                c.close()
        return out

    with concurrent.futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="sim-unit") as pool:
        futures = [pool.submit(drive, s, i) for i, s in enumerate(slices)]
        beats = [b for f in futures for b in f.result()]
    return StormResult(beats, time.monotonic() - started)


# -- headquarters nodes behind a load balancer -------------------------------------------------


@dataclass
class Node:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@dataclass
class Fleet:
    """Nodes, their load balancer, and the admin's data dir (keys, migrations, enrolment)."""

    admin: Path
    database_url: str
    store_url: str
    s3_client: Any  # boto3 client of the store's server, to check what it holds
    nodes: list[Node]
    lb: HaProxy

    @property
    def keys(self) -> Path:
        return self.admin / "keys"

    @property
    def origin(self) -> str:
        return self.lb.url

    def connection(self, timeout_s: float = 60.0) -> http.client.HTTPSConnection:
        ctx = ssl.create_default_context(cafile=str(self.keys / "ca.pem"))
        return http.client.HTTPSConnection("127.0.0.1", self.lb.port, context=ctx, timeout=timeout_s)

    def enrol(self, devices: Iterable[tuple[str, ed25519.Ed25519PublicKey]]) -> None:
        """Enrol (device id, public key) pairs straight into the shared index, as `enroll` does."""
        with open_index(self.admin, self.database_url) as index:
            for device_id, pub in devices:
                pem = pub.public_bytes(serialization.Encoding.PEM,
                                       serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")
                index.enroll(device_id, pem, fingerprint(public_der(pub)), time.time_ns())

    def locked_object(self, location: str) -> bytes:
        """The bytes of the version ``location`` names, after checking it is under COMPLIANCE lock."""
        bucket, rest = location.removeprefix("s3://").split("/", 1)
        key, _, version = rest.partition("?versionId=")
        head = self.s3_client.head_object(Bucket=bucket, Key=key, VersionId=version)
        if head.get("ObjectLockMode") != "COMPLIANCE":
            raise AssertionError(f"{location} is not under COMPLIANCE lock: {head.get('ObjectLockMode')}")
        body: bytes = self.s3_client.get_object(Bucket=bucket, Key=key, VersionId=version)["Body"].read()
        return body

    def cpu_s(self) -> float:
        """CPU seconds the running nodes have used (user + system, from /proc)."""
        total = 0.0
        for n in self.nodes:
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{n.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total


def start_node(name: str, work: Path, keys: Path, database_url: str, store_url: str, origin: str,
               env: dict[str, str], extra: Sequence[str] = (), cpu: int | None = None) -> Node:
    data = work / name
    data.mkdir()
    port = free_port()
    log_path = data / "serve.log"
    argv = [str(BIN / "bodycam-hq"), "serve", "--data-dir", str(data), "--keys", str(keys),
            "--listen", f"127.0.0.1:{port}", "--behind-proxy", "--public-origin", origin,
            "--database-url", database_url, "--store-url", store_url, *extra]

    def pin() -> None:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})

    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, env=env, preexec_fn=pin)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode(errors="replace")
    if not line.startswith("bodycam-hq: serving http"):
        proc.kill()
        proc.wait(10)
        raise RuntimeError(f"{name} did not start: {line!r}\n{log_path.read_text(errors='replace')[-2000:]}")
    return Node(name, port, proc, log_path)


@contextlib.contextmanager
def running_fleet(work: Path, database_url: str, store_url: str, s3_env: dict[str, str], s3_client: Any, *,
                  nodes: int = 2, balance: str = "first", node_args: Sequence[str] = (),
                  pin_cpus: bool = False) -> Iterator[Fleet]:
    """``nodes`` nodes (pinned one per CPU when ``pin_cpus``) behind HAProxy; keys made in
    ``work/admin/keys``, the database migrated first. Everything is stopped on exit."""
    admin = work / "admin"
    keygen(admin / "keys")
    env = {**os.environ, **s3_env}
    done = subprocess.run([str(BIN / "bodycam-hq"), "migrate", "--data-dir", str(admin), "--database-url",
                           database_url], capture_output=True, text=True, env=env, check=False, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"bodycam-hq migrate failed: {done.stderr.strip()}")
    lb_port = free_port()
    origin = f"https://127.0.0.1:{lb_port}"
    cpus = sorted(os.sched_getaffinity(0))
    started: list[Node] = []
    lb: HaProxy | None = None
    try:
        for i in range(nodes):
            cpu = cpus[i % len(cpus)] if pin_cpus else None
            started.append(start_node(f"node{i + 1}", work, admin / "keys", database_url, store_url, origin, env,
                                      node_args, cpu))
        lb = HaProxy(work / "lb", admin / "keys" / "server.pem", admin / "keys" / "server.key",
                     [(n.name, n.port) for n in started], balance=balance, port=lb_port)
        yield Fleet(admin, database_url, store_url, s3_client, started, lb)
    finally:
        if lb is not None:
            lb.stop()
        for n in started:
            n.stop()
# -- a unit's side, by hand: tus over the load balancer, every request signed -------------------


@dataclass(frozen=True)
class Device:
    """Who signs a request: a device id and its key (a ChainBuilder's signer, a SimUnit's keystore)."""

    device_id: str
    key: KeyStore


def sign(unit: Device, method: str, uri: str, headers: dict[str, str], body: bytes = b"") -> dict[str, str]:
    h = {"Tus-Resumable": "1.0.0", **headers}
    return {**h, **sign_request(method, uri, h, body, unit.device_id, unit.key, int(time.time()), new_nonce())}


def request(fleet: Fleet, conn: http.client.HTTPSConnection, unit: Device, method: str, path: str,
            headers: dict[str, str] | None = None, body: bytes = b"") -> http.client.HTTPResponse:
    conn.request(method, path, body=body or None, headers=sign(unit, method, fleet.origin + path, headers or {}, body))
    reply = conn.getresponse()
    reply.read()
    return reply


def create(fleet: Fleet, conn: http.client.HTTPSConnection, unit: Device, segment: Path, seq: int) -> str:
    data = segment.read_bytes()
    meta = UploadMeta(unit.device_id, seq, segment.name, hashlib.sha256(data).hexdigest())
    reply = request(fleet, conn, unit, "POST", "/v1/uploads/",
                    {"Upload-Length": str(len(data)), "Upload-Metadata": encode_metadata(meta)})
    if reply.status != 201:
        raise OSError(f"creating the upload of {segment.name}: answer {reply.status}")
    return reply.getheader("Location") or ""


def patch(fleet: Fleet, conn: http.client.HTTPSConnection, unit: Device, location: str, offset: int,
          chunk: bytes) -> http.client.HTTPResponse:
    digest = base64.b64encode(hashlib.sha256(chunk).digest()).decode()
    headers = {"Content-Type": "application/offset+octet-stream", "Upload-Offset": str(offset),
               "Upload-Checksum": f"sha256 {digest}"}
    return request(fleet, conn, unit, "PATCH", location, headers, chunk)


def receipt_via_head(fleet: Fleet, unit: Device, location: str,
                     deadline_s: float = SETTLE_DEADLINE_S) -> str:
    """HEAD until the upload's receipt is there (the unit's way after a cut), within a deadline."""
    deadline = time.monotonic() + deadline_s
    last = ""
    while time.monotonic() < deadline:
        conn = fleet.connection()
        try:
            reply = request(fleet, conn, unit, "HEAD", location)
            receipt = reply.getheader("Bodycam-Receipt")
            if receipt:
                return receipt
            last = (f"{reply.status} offset={reply.getheader('Upload-Offset')} "
                    f"ingest={reply.getheader('Bodycam-Ingest')}")
        except (OSError, http.client.HTTPException) as exc:
            last = repr(exc)
        finally:
            conn.close()
        time.sleep(0.5)
    raise AssertionError(f"no receipt for {location} within {deadline_s} s; last HEAD: {last}")


def resume(fleet: Fleet, unit: Device, location: str, evidence: bytes, chunk_bytes: int) -> None:
    """Ask where the upload stands and send the rest, as the unit's sync worker does after a cut."""
    deadline = time.monotonic() + SETTLE_DEADLINE_S
    while time.monotonic() < deadline:
        conn = fleet.connection()
        try:
            reply = request(fleet, conn, unit, "HEAD", location)
            if reply.status != 200:
                raise OSError(f"HEAD answered {reply.status}")
            offset = int(reply.getheader("Upload-Offset") or "0")
            while offset < len(evidence):
                answer = patch(fleet, conn, unit, location, offset, evidence[offset:offset + chunk_bytes])
                if answer.status != 204:
                    raise OSError(f"PATCH answered {answer.status}")
                offset = int(answer.getheader("Upload-Offset") or "0")
            return
        except (OSError, http.client.HTTPException):
            time.sleep(0.3)  # the load balancer has not noticed the dead node yet
        finally:
            conn.close()
    raise AssertionError(f"could not resume {location} within {SETTLE_DEADLINE_S} s")




def upload(fleet: Fleet, unit: Device, segment: Path, seq: int, chunk_bytes: int = 4 * 1024 * 1024
           ) -> tuple[str, str, float]:
    """Upload ``segment`` on one connection; return (location, receipt, seconds from its last byte
    sent to its receipt: the completing PATCH's answer, or HEADs while ingest is pending)."""
    evidence = segment.read_bytes()
    conn = fleet.connection()
    try:
        location = create(fleet, conn, unit, segment, seq)
        offset, receipt = 0, ""
        while offset < len(evidence):
            sent = time.monotonic()
            reply = patch(fleet, conn, unit, location, offset, evidence[offset:offset + chunk_bytes])
            if reply.status != 204:
                raise OSError(f"PATCH at {offset} of {segment.name}: answer {reply.status}")
            offset = int(reply.getheader("Upload-Offset") or "0")
            receipt = reply.getheader("Bodycam-Receipt") or ""
    finally:
        conn.close()
    if not receipt:
        receipt = receipt_via_head(fleet, unit, location)
    return location, receipt, time.monotonic() - sent


__all__ = ["Device", "Fleet", "MemoryKeyStore", "Node", "SimUnit", "StormResult", "create", "heartbeat_storm", "patch",
           "receipt_via_head", "request", "resume", "running_fleet", "sim_units", "start_node", "upload"]
