"""Sync section: a unit's backlog uploaded to a real headquarters on loopback (docs/sync-protocol.md).

Figures: throughput without a cap (against curl sending the same bytes to the same server), with
a bandwidth cap (against the cap), bytes sent again after connection cuts, and the recorder's
dropped frames while the real agent records and syncs at once.

The backlog is real evidence: the real agent (``bodycam run --sim``, 1280x720) records with sync
off (``hq.url`` empty) into a unit provisioned with ``bodycam provision`` and enrolled with
``bodycam-hq enroll``. Every measurement then gets a fresh copy of that unit and of headquarters'
data dir (keys and enrolment, no evidence), so each one uploads the whole backlog from scratch.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import logging
import random
import select
import shutil
import socket
import statistics
import subprocess
import threading
import time
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from agent.config import Config
from agent.control import request
from agent.evidence.format import PARTIAL_SUFFIX, SEGMENT_SUFFIX
from agent.evidence.httpsig import sign_request
from agent.evidence.keys import FileKeyStore, load_receipt_public
from agent.provision import HQ_CA_NAME
from agent.store import Segment, Store
from agent.sync.client import TUS_VERSION, HqClient
from agent.sync.policy import Backoff
from agent.sync.worker import SyncSettings, SyncWorker
from drivers.system_clock import SystemClock

from .agentproc import BIN, AgentRun, Recording, frame_accounting, prepare
from .common import MB, BenchError, Result, guarded, log_findings, machine, proc_stat_cpu_s, ratio, run_tool

log = logging.getLogger("bench.sync")

DEVICE_ID = "bench-sync-1"
WIDTH, HEIGHT, FPS = 1280, 720, 30
CAP_GOAL = 0.9  # achieved / capped rate
RECORDER_CAP_BPS = 4_000_000  # the capped recording: sync stays busy for the whole recording
CUT_SEED = 20240917
CHUNK_BYTES = SyncSettings().chunk_bytes  # the unit's default; curl sends the same chunks
PLACEHOLDER_URL = "https://127.0.0.1:9"  # provisioning needs a URL; each run sets the real one
HQ_START_TIMEOUT_S = 60.0
STATUS_EVERY_S = 0.5
DRAIN_AFTER_STOP_S = 120.0
CURL_WRITEOUT = "%{http_code} %{size_upload} %{num_connects} %{time_total}\\n"


# -- pure helpers (tested in tests/unit/test_bench_helpers.py) ----------------------------------


def chunk_ranges(length: int, chunk_bytes: int) -> list[tuple[int, int]]:
    """(offset, size) of each PATCH that uploads ``length`` bytes in ``chunk_bytes`` pieces, as the
    sync worker sends them (an empty file: one empty PATCH, which completes the upload)."""
    if chunk_bytes <= 0 or length < 0:
        raise ValueError("chunk_bytes must be positive and length not negative")
    if length == 0:
        return [(0, 0)]
    return [(off, min(chunk_bytes, length - off)) for off in range(0, length, chunk_bytes)]


def cut_offsets(seed: int, mean_gap: int, limit: int) -> list[int]:
    """Where to cut, in bytes sent towards headquarters since the proxy started: gaps drawn
    uniformly from [mean_gap / 2, 3 * mean_gap / 2] with ``random.Random(seed)``, up to ``limit``."""
    if mean_gap <= 1:
        raise ValueError("mean_gap must exceed 1 byte")
    rng = random.Random(seed)
    out: list[int] = []
    at = 0
    while True:
        at += rng.randint(mean_gap // 2, mean_gap + mean_gap // 2)
        if at > limit:
            return out
        out.append(at)


def split_for_cut(done: int, n: int, next_cut: int | None) -> tuple[int, bool]:
    """Of ``n`` bytes arriving when ``done`` were already forwarded: how many to forward, and
    whether the connection is cut after them (the cut falls within or right at their end)."""
    if next_cut is None or done + n < next_cut:
        return n, False
    return max(0, next_cut - done), True


def curl_quote(value: str) -> str:
    """A value for a curl ``-K`` config file: double-quoted, with backslash and quote escaped."""
    if any(c in value for c in "\r\n"):
        raise ValueError("a curl config value cannot hold a line break")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True, slots=True)
class CurlRequest:
    method: str
    url: str
    headers: Mapping[str, str]
    body_file: Path


def curl_config(requests: Sequence[CurlRequest], ca_file: Path, writeout: str = CURL_WRITEOUT) -> str:
    """A curl ``-K`` config that sends ``requests`` one after another (``next`` between them), on
    one keep-alive connection, HTTP/1.1 over TLS 1.3 pinned to ``ca_file``, answers discarded."""
    blocks = []
    for req in requests:
        lines = [
            f"url = {curl_quote(req.url)}",
            f"request = {curl_quote(req.method)}",
            "http1.1",
            "tlsv1.3",
            f"cacert = {curl_quote(str(ca_file))}",
            'header = "Expect:"',  # no 100-continue round trip before each body
            *(f"header = {curl_quote(f'{k}: {v}')}" for k, v in req.headers.items()),
            f"data-binary = {curl_quote('@' + str(req.body_file))}",
            'output = "/dev/null"',
            f"write-out = {curl_quote(writeout)}",
        ]
        blocks.append("\n".join(lines))
    return "silent\nshow-error\n" + "\nnext\n".join(blocks) + "\n"


def parse_curl_writeout(text: str) -> list[dict[str, float | int]]:
    """One dict per line of ``CURL_WRITEOUT``: status, bytes uploaded, new connections, seconds."""
    out: list[dict[str, float | int]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split()
        try:
            status, size, connects, total = int(parts[0]), int(parts[1]), int(parts[2]), float(parts[3])
        except (ValueError, IndexError):
            raise BenchError(f"curl write-out line not understood: {line[:80]!r}") from None
        out.append({"status": status, "size_upload": size, "num_connects": connects, "time_total_s": total})
    return out


def rate(n_bytes: int, seconds: float) -> Result:
    """Throughput in MB/s (10^6 bytes) and Mbit/s."""
    if seconds <= 0:
        return {"MB_per_s": None, "Mbit_per_s": None}
    return {"MB_per_s": round(n_bytes / seconds / MB, 3), "Mbit_per_s": round(n_bytes * 8 / seconds / 1e6, 3)}


def resent_figures(offered: int, evidence: int, cuts: int, chunk_bytes: int) -> Result:
    """Bytes sent again because of cuts: request bodies handed to the socket beyond the evidence's
    own size, per cut, and per cut in chunks (the protocol promises at most 1)."""
    resent = offered - evidence
    per_cut = resent / cuts if cuts else None
    return {
        "resent_bytes": resent,
        "resent_bytes_per_cut": None if per_cut is None else round(per_cut),
        "resent_chunks_per_cut": None if per_cut is None else round(per_cut / chunk_bytes, 3),
    }


def size_summary(sizes: Sequence[int]) -> Result:
    if not sizes:
        return {"count": 0}
    return {"count": len(sizes), "min": min(sizes), "median": round(statistics.median(sizes)), "max": max(sizes),
            "total": sum(sizes)}


# -- headquarters and the unit --------------------------------------------------------------


class Hq:
    """``bodycam-hq serve --listen 127.0.0.1:0`` on a data dir; its URL from the line it prints."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self._log = (data / "hq.log").open("wb")
        argv = [str(BIN / "bodycam-hq"), "serve", "--data-dir", str(data), "--listen", "127.0.0.1:0"]
        log.info("starting headquarters: %s", " ".join(argv))
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self._log, stdin=subprocess.DEVNULL)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], HQ_START_TIMEOUT_S)
        line = self.proc.stdout.readline().decode(errors="replace") if ready else ""
        prefix = "https://127.0.0.1:"
        if prefix not in line:
            self.stop()
            raise BenchError(f"bodycam-hq serve printed no URL ({line.strip()!r}); see {data / 'hq.log'}")
        self.port = int(line.split(prefix, 1)[1].split("/", 1)[0])
        self.url = f"{prefix}{self.port}"

    def cpu_s(self) -> float:
        try:
            return proc_stat_cpu_s(Path(f"/proc/{self.proc.pid}/stat").read_text())
        except OSError:
            raise BenchError("headquarters process vanished") from None

    def held(self) -> int:
        """Entries headquarters stored as evidence for the bench unit."""
        return len(list((self.data / "evidence" / DEVICE_ID).glob("*.bcs")))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()

    def findings(self) -> Result:
        try:
            text = (self.data / "hq.log").read_text(errors="replace")
        except OSError:
            return {}
        return log_findings(text.splitlines())


@contextlib.contextmanager
def running_hq(pristine: Path, data: Path) -> Iterator[Hq]:
    """A fresh headquarters (a copy of ``pristine``: keys and the enrolment, no evidence)."""
    shutil.copytree(pristine, data)
    hq = Hq(data)
    try:
        yield hq
    finally:
        hq.stop()


def copy_unit(pristine: Path, data: Path) -> Path:
    """A copy of the filled unit: its evidence, index (all entries still to upload) and keys."""
    shutil.copytree(pristine, data, ignore=shutil.ignore_patterns("*.sock", "agent.log"))
    return data


def at_720p(hq_url: str, **sync: Any) -> Callable[[Config], Config]:
    """The bench's unit config: the chest camera at 1280x720@30, ``hq.url`` set (or empty: no sync)."""

    def adjust(config: Config) -> Config:
        chest = config.cameras.get("chest")
        if chest is None:
            raise BenchError("the provisioned config has no chest camera")
        options = types.MappingProxyType({**chest.options, "width": WIDTH, "height": HEIGHT, "fps": FPS})
        cameras = types.MappingProxyType({**config.cameras, "chest": dataclasses.replace(chest, options=options)})
        return dataclasses.replace(config, cameras=cameras, hq=dataclasses.replace(config.hq, url=hq_url),
                                   sync=dataclasses.replace(config.sync, **sync))

    return adjust


def media_tracks(described: Result) -> int:
    return len(described["cameras"]) + sum(1 for s in ("thermal", "microphone") if s in described["enabled"])


def candidates(store: Store) -> list[Segment]:
    """What the sync worker still has to upload (as it counts its backlog)."""
    return store.segments("uploading") + store.pending_upload()


def provision(folder: Path) -> tuple[Path, Path]:
    """Headquarters' keys and a unit provisioned for it and enrolled: (hq data dir, unit data dir)."""
    hq, unit = folder / "hq-pristine", folder / "unit-pristine"
    keys = hq / "keys"
    run_tool([str(BIN / "bodycam-hq"), "keygen", "--data-dir", str(hq)], timeout_s=120)
    run_tool([str(BIN / "bodycam"), "provision", "--data-dir", str(unit), "--device-id", DEVICE_ID,
              "--hq-pub", str(keys / "hq.pub"), "--hq-url", PLACEHOLDER_URL, "--hq-ca", str(keys / "ca.pem")],
             timeout_s=120)
    run_tool([str(BIN / "bodycam-hq"), "enroll", "--data-dir", str(hq), "--device-id", DEVICE_ID,
              "--device-pub", str(unit / "device.pub")], timeout_s=120)
    return hq, unit


def fill(unit: Path, record_s: float) -> Result:
    """The real agent records ``record_s`` seconds with sync off: the backlog every run uploads."""
    cfg, described = prepare(unit, sim=True, adjust=at_720p(""))
    agent = AgentRun(unit, cfg, sim=True)
    try:
        agent.spawn(max_s=record_s + 600)
        rec = agent.record(Recording(record_s, restart_in_process=False), media_tracks(described))
    finally:
        agent.terminate()
    with Store(unit / "index.sqlite", SystemClock()) as store:
        entries = candidates(store)
    if not entries:
        raise BenchError("the agent recorded nothing to upload")
    segs = [e.size_bytes for e in entries if e.kind == "segment"]
    frames = rec.get("frames", {})
    return {
        "source": "the real agent (bodycam run --sim) recording with hq.url empty (sync off): real sealed "
        "segments and events, sized by the encoder",
        "config": described,
        "record_s": record_s,
        "entries": len(entries),
        "evidence_bytes": sum(e.size_bytes for e in entries),
        "segment_bytes": size_summary(segs),
        "event_entries": sum(1 for e in entries if e.kind != "segment"),
        "footage_s": frames.get("footage_s_in_manifests"),
        "dropped_total": frames.get("dropped_total"),
        "agent_cpu_s_per_s_without_sync": rec.get("cpu", {}).get("cpu_s_per_footage_s"),
        "log": agent.findings()["counts"],
    }


# -- an in-process sync worker --------------------------------------------------------------


class CountingWorker(SyncWorker):
    """The unit's sync worker, counting the request-body bytes it hands to the socket.

    ``SyncWorker._pace`` is called before each slice (16 KiB at most) of a PATCH body is sent,
    whether or not a cap is set; bytes of a chunk that a cut interrupted are counted too.
    """

    offered_bytes = 0

    def _pace(self, n_bytes: int) -> None:
        self.offered_bytes += n_bytes
        super()._pace(n_bytes)


@contextlib.contextmanager
def unit_worker(unit: Path, url: str, settings: SyncSettings) -> Iterator[tuple[CountingWorker, Store]]:
    clock = SystemClock()
    store = Store(unit / "index.sqlite", clock)
    try:
        worker = CountingWorker(
            store, unit, FileKeyStore(unit / "device.key"), DEVICE_ID, url, unit / HQ_CA_NAME,
            load_receipt_public(unit / "hq.pub"), clock, settings, lambda: {"bench": True},
        )
        yield worker, store
    finally:
        store.close()


def upload_all(worker: SyncWorker, store: Store, timeout_s: float) -> Result:
    """Run the worker's passes on this thread until nothing is left to upload; time them."""
    t0 = time.monotonic()
    passes = failures = 0
    while True:
        wait_s = worker.run_once()
        passes += 1
        st = worker.get_status()
        if not candidates(store):
            break
        if st["alarm"] is not None or st["deferred"]:
            raise BenchError(f"sync stuck: alarm {st['alarm']}, deferred {st['deferred']}, error {st['last_error']}")
        if time.monotonic() - t0 > timeout_s:
            raise BenchError(f"backlog not uploaded within {timeout_s:.0f} s: {st['backlog']}, {st['last_error']}")
        if st["state"] == "backoff":
            failures += 1
            time.sleep(min(wait_s, 5.0))
    wall = time.monotonic() - t0
    rows = store.segments()
    acked = sum(1 for r in rows if r.state == "acknowledged")
    if acked != len(rows):
        raise BenchError(f"only {acked} of {len(rows)} entries acknowledged")
    return {"wall_s": round(wall, 3), "passes": passes, "failed_passes": failures, "acknowledged": acked}


@contextlib.contextmanager
def quiet_sync_log() -> Iterator[None]:
    """The worker logs every entry at INFO and every cut at WARNING: keep stderr readable."""
    logger = logging.getLogger("agent.sync")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def bench_settings(bandwidth_bps: int = 0, backoff: Backoff | None = None) -> SyncSettings:
    # heartbeat_s: one heartbeat at the start of the first pass, none in the middle of the timing
    return SyncSettings(interval_s=1.0, heartbeat_s=3600.0, bandwidth_bps=bandwidth_bps, chunk_bytes=CHUNK_BYTES,
                        backoff=backoff or Backoff())


def sync_upload(unit: Path, hq: Hq, url: str, settings: SyncSettings, timeout_s: float) -> Result:
    with unit_worker(unit, url, settings) as (worker, store), quiet_sync_log():
        evidence = sum(e.size_bytes for e in candidates(store))
        hq_cpu0, cpu0 = hq.cpu_s(), time.process_time()
        done = upload_all(worker, store, timeout_s)
        cpu, hq_cpu = time.process_time() - cpu0, hq.cpu_s() - hq_cpu0
        done.update(
            evidence_bytes=evidence,
            body_bytes_offered=worker.offered_bytes,
            **rate(evidence, done["wall_s"]),
            client_cpu_s=round(cpu, 2),
            hq_cpu_s=round(hq_cpu, 2),
            hq_held=hq.held(),
        )
    return done


# -- curl -----------------------------------------------------------------------------------


def curl_upload(unit: Path, hq: Hq, work: Path, timeout_s: float) -> Result:
    """The baseline: the same entries, created by HqClient (signed POSTs, timed apart), then every
    chunk PATCHed by one curl process on one keep-alive connection with headers signed here."""
    curl = shutil.which("curl")
    if curl is None:
        raise BenchError("curl is not installed (Debian: apt-get install -y curl)")
    clock = SystemClock()
    keystore = FileKeyStore(unit / "device.key")
    with Store(unit / "index.sqlite", clock) as store:
        entries = candidates(store)
    client = HqClient(hq.url, unit / HQ_CA_NAME, DEVICE_ID, keystore, clock)
    chunks_dir = work / "curl-chunks"
    chunks_dir.mkdir(parents=True)
    t0 = time.monotonic()
    uploads: list[tuple[str, bytes]] = []
    try:
        for e in entries:
            data = (unit / e.path).read_bytes()
            url = client.create(len(data), {"device_id": DEVICE_ID, "seq": str(e.seq), "filename": Path(e.path).name,
                                            "sha256": hashlib.sha256(data).hexdigest()})
            uploads.append((url, data))
    finally:
        client.close()
    create_s = time.monotonic() - t0
    reqs: list[CurlRequest] = []
    now_s = clock.utc_ns() // 1_000_000_000
    for url, data in uploads:
        for off, size in chunk_ranges(len(data), CHUNK_BYTES):
            body = data[off:off + size]
            path = chunks_dir / f"{len(reqs):05d}.bin"
            path.write_bytes(body)
            headers = {
                "Tus-Resumable": TUS_VERSION,
                "Content-Type": "application/offset+octet-stream",
                "Upload-Offset": str(off),
                "Upload-Checksum": "sha256 " + _b64(hashlib.sha256(body).digest()),
            }
            headers.update(sign_request("PATCH", url, headers, body, DEVICE_ID, keystore, now_s))
            reqs.append(CurlRequest("PATCH", url, headers, path))
    config = work / "curl.conf"
    config.write_text(curl_config(reqs, unit / HQ_CA_NAME))
    evidence = sum(len(d) for _, d in uploads)
    argv = [curl, "--config", str(config)]
    log.info("curl: %d PATCH requests, %d bytes", len(reqs), evidence)
    hq_cpu0 = hq.cpu_s()
    t1 = time.monotonic()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise BenchError(f"curl did not finish within {timeout_s:.0f} s") from None
    wall = time.monotonic() - t1
    hq_cpu = hq.cpu_s() - hq_cpu0
    answers = parse_curl_writeout(done.stdout)
    if done.returncode != 0 or len(answers) != len(reqs):
        raise BenchError(f"curl exited {done.returncode} after {len(answers)} of {len(reqs)} requests: "
                         f"{done.stderr.strip()[-300:]}")
    bad = [a["status"] for a in answers if a["status"] != 204]
    if bad:
        raise BenchError(f"headquarters refused curl's PATCHes: statuses {sorted(set(bad))}; see {hq.data}/hq.log")
    held = hq.held()
    if held != len(entries):
        raise BenchError(f"headquarters holds {held} of {len(entries)} entries after curl")
    return {
        "argv": " ".join(argv),
        "requests": len(reqs),
        "connections": sum(int(a["num_connects"]) for a in answers),
        "bytes_uploaded": sum(int(a["size_upload"]) for a in answers),
        "evidence_bytes": evidence,
        "wall_s": round(wall, 3),
        **rate(evidence, wall),
        "create_s": round(create_s, 3),
        "with_creates": rate(evidence, wall + create_s),
        "hq_cpu_s": round(hq_cpu, 2),
        "hq_held": held,
        "curl_version": _curl_version(curl),
    }


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _curl_version(curl: str) -> str:
    done = subprocess.run([curl, "--version"], capture_output=True, text=True, check=False, timeout=10)
    return done.stdout.splitlines()[0] if done.stdout else "unknown"


# -- a loopback proxy that counts and cuts ----------------------------------------------------


class CuttingProxy:
    """A TCP proxy on 127.0.0.1 to headquarters' port: counts bytes each way and, when the bytes
    sent towards headquarters (over all connections) reach each offset of ``cuts``, forwards up to
    that byte and resets both sides of that connection. While ``refusing``, it resets every new
    connection at once (headquarters unreachable)."""

    def __init__(self, upstream_port: int, cuts: Sequence[int] = (), refusing: bool = False) -> None:
        self._upstream = ("127.0.0.1", upstream_port)
        self._cuts = sorted(cuts)
        self._lock = threading.Lock()
        self._socks: set[socket.socket] = set()
        self.refusing = refusing
        self.up_bytes = 0
        self.down_bytes = 0
        self.cuts_done = 0
        self.connections = 0
        self.refused = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._closed = False
        self._thread = threading.Thread(target=self._accept, name="cut-proxy", daemon=True)
        self._thread.start()

    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _next_cut(self) -> int | None:
        return self._cuts[self.cuts_done] if self.cuts_done < len(self._cuts) else None

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.refusing or self._closed:
                self.refused += 1
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self._upstream, timeout=10)
            except OSError:
                _reset(client)
                continue
            upstream.settimeout(None)
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self.connections += 1
                self._socks.update((client, upstream))
            pair = _Pair(client, upstream, self)
            threading.Thread(target=pair.pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=pair.pump, args=(upstream, client, False), daemon=True).start()

    def forward(self, pair: _Pair, dst: socket.socket, data: bytes, up: bool) -> bool:
        """Send ``data`` on; False when the connection was cut (or died)."""
        cut = False
        n = len(data)
        with self._lock:
            if up:
                n, cut = split_for_cut(self.up_bytes, len(data), self._next_cut())
                self.up_bytes += n
                if cut:
                    self.cuts_done += 1
            else:
                self.down_bytes += n
        try:
            if n:
                dst.sendall(data[:n])
        except OSError:
            return False
        if cut:
            pair.cut()
            return False
        return True

    def forget(self, socks: Sequence[socket.socket]) -> None:
        with self._lock:
            self._socks.difference_update(socks)

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)


class _Pair:
    """One proxied connection: two pumps; the last one to finish closes both sockets."""

    def __init__(self, client: socket.socket, upstream: socket.socket, proxy: CuttingProxy) -> None:
        self.client, self.upstream, self.proxy = client, upstream, proxy
        self._running = 2
        self._lock = threading.Lock()
        self._cut = False

    def cut(self) -> None:
        self._cut = True
        # RST to the unit, as a lost network looks to a sender; headquarters sees the body end short
        with contextlib.suppress(OSError):
            self.client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        for s in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def pump(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        try:
            while True:
                try:
                    data = src.recv(256 * 1024)
                except OSError:
                    break
                if not data or not self.proxy.forward(self, dst, data, up):
                    break
            if not self._cut:
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
        finally:
            with self._lock:
                self._running -= 1
                last = self._running == 0
            if last:
                for s in (self.client, self.upstream):
                    with contextlib.suppress(OSError):
                        s.close()
                self.proxy.forget((self.client, self.upstream))


def _reset(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    with contextlib.suppress(OSError):
        sock.close()


# -- the measurements ------------------------------------------------------------------------


def median_run(runs: Sequence[Result], key: str = "MB_per_s") -> Result:
    """The run with the median ``key`` (the lower middle one of an even count), with every run's figure."""
    ok = sorted((r for r in runs if r.get(key) is not None), key=lambda r: r[key])
    if not ok:
        return runs[-1] if runs else {"error": "no run"}
    return {**ok[(len(ok) - 1) // 2], f"runs_{key}": [r.get(key) for r in runs]}


def best(runs: Sequence[Result], key: str = "MB_per_s") -> float | None:
    """The highest ``key`` over the runs that have it."""
    values = [r[key] for r in runs if r.get(key) is not None]
    return max(values) if values else None


def uncapped(hq_pristine: Path, unit_pristine: Path, folder: Path, repeats: int, timeout_s: float) -> Result:
    syncs: list[Result] = []
    curls: list[Result] = []
    for i in range(repeats):  # interleaved, so a change in the machine's load hits both alike
        with running_hq(hq_pristine, folder / f"uncapped-hq-{i}") as hq:
            unit = copy_unit(unit_pristine, folder / f"uncapped-unit-{i}")
            log.info("sync: uploading the backlog without a cap (%d/%d)", i + 1, repeats)
            run = guarded("uncapped sync", partial(sync_upload, unit, hq, hq.url, bench_settings(), timeout_s))
            run["hq_log"] = hq.findings().get("counts")
            syncs.append(run)
        with running_hq(hq_pristine, folder / f"curl-hq-{i}") as hq:
            log.info("sync: the same bytes with curl (%d/%d)", i + 1, repeats)
            run = guarded("curl baseline", partial(curl_upload, unit_pristine, hq, folder / f"curl-{i}", timeout_s))
            run["hq_log"] = hq.findings().get("counts")
            curls.append(run)
    out: Result = {"repeats": repeats, "sync": median_run(syncs), "curl": median_run(curls)}
    out["ratio_sync_over_curl"] = ratio(out["sync"].get("MB_per_s"), out["curl"].get("MB_per_s"))
    out["ratio_sync_over_curl_with_creates"] = ratio(out["sync"].get("MB_per_s"),
                                                     out["curl"].get("with_creates", {}).get("MB_per_s"))
    out["ratio_best_sync_over_best_curl"] = ratio(best(syncs), best(curls))
    out["what"] = {
        "sync": "agent.sync.worker.SyncWorker (the unit's own worker, in this process, passes run on this "
        "thread) uploading the whole backlog straight to headquarters, no cap, 1 MiB chunks: wall time from "
        "its first pass to the last receipt, including one heartbeat, hashing each file, the signed "
        "POST and HEAD per entry, the unit's index and sidecar updates, and headquarters verifying every file "
        "before its last PATCH is answered. MB/s = evidence bytes (10^6) per second; client_cpu_s: this "
        "process; hq_cpu_s: bodycam-hq serve. The median of `repeats` runs (each on a fresh headquarters and "
        "a fresh copy of the unit); runs_MB_per_s lists them all",
        "curl": "baseline: a fresh headquarters; HqClient creates the same uploads (signed POSTs, create_s, "
        "not in wall_s), then ONE curl process sends every chunk of every entry as a tus PATCH (same 1 MiB "
        "chunks, Upload-Offset/Upload-Checksum headers and RFC 9421 signatures computed here beforehand) on "
        "one keep-alive TLS 1.3 connection; wall_s is curl's whole run (process start included), so it also "
        "includes headquarters verifying each file on its last chunk. with_creates adds create_s. Median "
        "of `repeats` runs",
        "ratio_sync_over_curl": "sync MB/s over curl MB/s (PATCHes only): what the unit's client and its "
        "extra requests (heartbeat, create, HEAD per entry) cost against curl sending just the chunks",
        "ratio_sync_over_curl_with_creates": "the same against curl plus the time to create the uploads",
        "ratio_best_sync_over_best_curl": "the fastest sync run over the fastest curl run: each run lasts well "
        "under a second, so other load on the machine moves single runs a lot; the best runs are the least "
        "disturbed",
    }
    return out


def capped(hq_pristine: Path, unit_pristine: Path, folder: Path, cap_bps: int) -> Result:
    with running_hq(hq_pristine, folder / "capped-hq") as hq:
        unit = copy_unit(unit_pristine, folder / "capped-unit")
        proxy = CuttingProxy(hq.port)
        try:
            with Store(unit / "index.sqlite", SystemClock()) as store:
                evidence = sum(e.size_bytes for e in candidates(store))
            timeout = evidence * 8 / cap_bps * 4 + 120
            log.info("sync: uploading %d bytes capped at %d bit/s (about %.0f s)", evidence, cap_bps,
                     evidence * 8 / cap_bps)
            done = sync_upload(unit, hq, proxy.url(), bench_settings(bandwidth_bps=cap_bps), timeout)
        finally:
            proxy.close()
        achieved = evidence * 8 / done["wall_s"]
        wire = proxy.up_bytes * 8 / done["wall_s"]
        return {
            "cap_bps": cap_bps,
            "sync": done,
            "achieved_bps": round(achieved),
            "ratio_achieved_over_cap": ratio(achieved, cap_bps),
            "goal": CAP_GOAL,
            "wire_bytes_up": proxy.up_bytes,
            "wire_bytes_down": proxy.down_bytes,
            "wire_up_bps": round(wire),
            "ratio_wire_over_cap": ratio(wire, cap_bps),
            "connections": proxy.connections,
            "hq_log": hq.findings().get("counts"),
            "what": {
                "achieved_bps": "evidence bytes x 8 over the worker's wall time from its first pass to the last "
                "receipt (sync.wall_s), with SyncSettings.bandwidth_bps = cap_bps (token bucket, 0.25 s burst; it "
                "starts full, so a short run can exceed the cap by up to 0.25 s / wall_s)",
                "ratio_achieved_over_cap": "achieved_bps / cap_bps (goal >= 0.9): what the cap leaves of the link "
                "once per-entry requests and headquarters' verification of each file (no bytes sent meanwhile) "
                "are paid",
                "wire_*": "bytes through a pass-through TCP proxy in this process between the unit and "
                "headquarters (TLS records, HTTP headers, signatures: everything); the cap applies to request "
                "bodies only, so wire_up_bps may exceed achieved_bps",
            },
        }


def cut_run(hq_pristine: Path, unit_pristine: Path, folder: Path, seed: int, target_cuts: int,
            timeout_s: float) -> Result:
    with running_hq(hq_pristine, folder / f"cuts-hq-{seed}") as hq:
        unit = copy_unit(unit_pristine, folder / f"cuts-unit-{seed}")
        with Store(unit / "index.sqlite", SystemClock()) as store:
            evidence = sum(e.size_bytes for e in candidates(store))
        # at least 3 chunks between cuts on average (1.5 at least): with gaps shorter than a chunk
        # no chunk would ever get through whole
        mean_gap = max(3 * CHUNK_BYTES, evidence // (target_cuts + 1))
        offsets = cut_offsets(seed, mean_gap, 4 * evidence)
        proxy = CuttingProxy(hq.port, offsets)
        # Retry soon after a cut: the figure is bytes, not time, and the real 1 s..5 min backoff
        # would make the run minutes long.
        settings = bench_settings(backoff=Backoff(0.05, 0.2))
        log.info("sync: uploading %d bytes through a proxy cutting every ~%d bytes (seed %d)", evidence, mean_gap,
                 seed)
        try:
            done = sync_upload(unit, hq, proxy.url(), settings, timeout_s)
        finally:
            proxy.close()
        return {
            "seed": seed,
            "mean_gap_bytes": mean_gap,
            "cuts": proxy.cuts_done,
            "evidence_bytes": evidence,
            "body_bytes_offered": done["body_bytes_offered"],
            **resent_figures(done["body_bytes_offered"], evidence, proxy.cuts_done, CHUNK_BYTES),
            "wire_bytes_up": proxy.up_bytes,
            "connections": proxy.connections,
            "wall_s": done["wall_s"],
            "acknowledged": done["acknowledged"],
            "hq_held": done["hq_held"],
            "hq_log": hq.findings().get("counts"),
        }


def cuts(hq_pristine: Path, unit_pristine: Path, folder: Path, seeds: Sequence[int], target_cuts: int,
         wire_baseline: int | None, timeout_s: float) -> Result:
    runs = [guarded(f"cuts seed {seed}", partial(cut_run, hq_pristine, unit_pristine, folder, seed, target_cuts,
                                                 timeout_s)) for seed in seeds]
    good = [r for r in runs if "error" not in r]
    n_cuts = sum(r["cuts"] for r in good)
    offered = sum(r["body_bytes_offered"] for r in good)
    evidence = sum(r["evidence_bytes"] for r in good)
    wire_extra = (sum(r["wire_bytes_up"] - wire_baseline for r in good) if wire_baseline is not None else None)
    per_run = [r["resent_chunks_per_cut"] for r in good if r["resent_chunks_per_cut"] is not None]
    return {
        "runs": runs,
        "cuts": n_cuts,
        "chunk_bytes": CHUNK_BYTES,
        **resent_figures(offered, evidence, n_cuts, CHUNK_BYTES),
        "worst_run_resent_chunks_per_cut": max(per_run) if per_run else None,
        "goal_max_resent_chunks_per_cut": 1,
        "wire_bytes_up_uncut": wire_baseline,
        "wire_extra_bytes_per_cut": round(wire_extra / n_cuts) if wire_extra is not None and n_cuts else None,
        "what": {
            "runs": "one upload of the whole backlog per seed, each on a fresh headquarters and unit copy, "
            "through a TCP proxy in this process that resets the connection at seeded random offsets of the "
            "byte stream towards headquarters (gaps uniform in [mean/2, 3*mean/2], mean = evidence / (cuts "
            "wanted + 1) but at least 3 chunks); the worker retries after 0.05-0.2 s (bench backoff instead "
            "of 1 s..5 min) and resumes from headquarters' offset (HEAD)",
            "body_bytes_offered": "PATCH body bytes the worker handed to its socket (counted in "
            "SyncWorker._pace, called before every <= 16 KiB slice), including slices of a chunk a cut "
            "interrupted",
            "resent_bytes": "sum over runs of body_bytes_offered - evidence_bytes: bytes sent again because of "
            "the cuts; per cut, and per cut in chunks (the protocol promises at most 1 chunk per cut); "
            "worst_run_*: the run with the most per cut",
            "wire_extra_bytes_per_cut": "(wire bytes up with cuts - wire bytes up of the capped run, same "
            "backlog, no cuts) / cuts: what reached the proxy again (re-sent bodies, new TLS handshakes, HEADs "
            "and headers). Smaller than resent_bytes_per_cut: body bytes still in the kernel's socket buffers "
            "when the connection is reset count as offered but never reach the proxy",
        },
    }


def recorder_while_syncing(hq_pristine: Path, unit_pristine: Path, folder: Path, record_s: float,
                           bandwidth_bps: int) -> Result:
    """The real agent records at 720p with sync on while its backlog (the fill's) and each new
    segment go to headquarters; the frames it dropped, and the backlog it was left with."""
    name = f"recorder-{bandwidth_bps}"
    with running_hq(hq_pristine, folder / f"{name}-hq") as hq:
        unit = copy_unit(unit_pristine, folder / f"{name}-unit")
        # headquarters unreachable until the recording starts, so the backlog goes up while recording
        proxy = CuttingProxy(hq.port, refusing=True)
        try:
            cfg, described = prepare(unit, sim=True, adjust=at_720p(proxy.url(), interval_s=1.0, backoff_max_s=1.0,
                                                                    bandwidth_bps=bandwidth_bps))
            with Store(unit / "index.sqlite", SystemClock()) as store:
                backlog0 = candidates(store)
            agent = AgentRun(unit, cfg, sim=True)
            try:
                agent.spawn(max_s=record_s + 600)
                out = _record_and_sync(agent, proxy, hq, media_tracks(described), record_s)
            finally:
                out_code = agent.terminate()
        finally:
            proxy.close()
        with Store(unit / "index.sqlite", SystemClock()) as store:
            rows = store.segments()
        out.update(
            exit_code=out_code,
            backlog_before={"entries": len(backlog0), "bytes": sum(e.size_bytes for e in backlog0)},
            entries_acknowledged_at_exit=sum(1 for r in rows if r.state == "acknowledged"),
            entries_at_exit=len(rows),
            hq_held=hq.held(),
            wire_bytes_up=proxy.up_bytes,
            agent_log=agent.findings(),
            hq_log=hq.findings().get("counts"),
            config={"camera": f"{WIDTH}x{HEIGHT}@{FPS}", "sync": {"bandwidth_bps": bandwidth_bps, "interval_s": 1.0,
                                                                        "backoff_max_s": 1.0},
                    "enabled": described["enabled"]},
        )
        return out


def _sync_view(st: Mapping[str, Any]) -> Result:
    sync = st.get("sync", {})
    return {"state": sync.get("state"), "backlog": sync.get("backlog"), "sent_bytes": sync.get("sent_bytes"),
            "last_error": (sync.get("last_error") or {}).get("message"), "alarm": sync.get("alarm")}


def sealed_on_unit(data_dir: Path) -> int | None:
    """Sealed chain entries in the unit's segments folder, or None while an entry is still open."""
    names = [p.name for p in (data_dir / "segments").iterdir()]
    if any(n.endswith(PARTIAL_SUFFIX) for n in names):
        return None
    return sum(1 for n in names if n.endswith(SEGMENT_SUFFIX))


def _record_and_sync(agent: AgentRun, proxy: CuttingProxy, hq: Hq, tracks: int, record_s: float) -> Result:
    agent.wait_ready(tracks)
    time.sleep(1.0)
    reply = request(agent.socket, "start")
    if not reply.get("ok"):
        raise BenchError(f"start refused: {reply.get('error')}")
    st0, cpu0, t0 = agent.status(), agent.cpu_s(), time.monotonic()
    proxy.refusing = False  # headquarters reachable from now on
    backlog_at_start = _sync_view(st0)["backlog"]
    peak_backlog = int((backlog_at_start or {}).get("bytes") or 0)
    backlog_empty_at: float | None = None
    while (elapsed := time.monotonic() - t0) < record_s:
        time.sleep(min(STATUS_EVERY_S, max(0.0, record_s - elapsed)))
        if time.monotonic() - t0 >= record_s:
            break
        st = agent.status()
        view = _sync_view(st)
        backlog = view["backlog"] or {}
        peak_backlog = max(peak_backlog, int(backlog.get("bytes") or 0))
        if backlog_empty_at is None and backlog.get("entries") == 0:
            backlog_empty_at = time.monotonic() - t0
    st1, cpu1, t1 = agent.status(), agent.cpu_s(), time.monotonic()
    stop = request(agent.socket, "stop")
    st2 = agent.status()
    at_stop = _sync_view(st1)
    drained_s: float | None = None
    t_stop = time.monotonic()
    while time.monotonic() - t_stop < DRAIN_AFTER_STOP_S:
        sealed = sealed_on_unit(agent.data_dir)
        if sealed is not None and hq.held() >= sealed:
            drained_s = round(time.monotonic() - t_stop, 2)
            break
        time.sleep(0.1)
    frames = frame_accounting(st0, st1, st2, agent.data_dir, reply.get("data", {}).get("recording_id"))
    sent = (at_stop["sent_bytes"] or 0) - (_sync_view(st0)["sent_bytes"] or 0)
    return {
        "record_s": round(t1 - t0, 2),
        "stop_ok": bool(stop.get("ok")),
        "dropped_total": frames["dropped_total"],
        "dropped_goal": 0,
        "dropped_per_track": {k: {"status": v["dropped_status"], "manifests": v["dropped_stored"],
                                  "driver": v["driver_dropped"]} for k, v in frames["tracks"].items()},
        "frames": frames,
        "agent_cpu_s_per_s": round((cpu1 - cpu0) / (t1 - t0), 3),
        "sync_sent_bytes_while_recording": sent,
        "sync_rate_while_recording": rate(sent, t1 - t0),
        "backlog_at_start": backlog_at_start,
        "peak_backlog_bytes": peak_backlog,
        "backlog_first_empty_after_s": None if backlog_empty_at is None else round(backlog_empty_at, 2),
        "sync_at_stop": at_stop,
        "drained_after_stop_s": drained_s,
        "what": {
            "dropped_total": "frames the recorder dropped (ctl status, over the control socket), summed over "
            "tracks; per track also from the segment manifests (tracks[].dropped) and the sensor driver. Goal 0",
            "agent_cpu_s_per_s": "the agent's CPU seconds per wall second while recording and syncing (compare "
            "backlog.agent_cpu_s_per_s_without_sync: the same recording with sync off)",
            "sync_sent_bytes_while_recording": "the worker's sent_bytes (acknowledged chunks) between the start "
            "and stop replies; headquarters is unreachable (the proxy resets connections) until the start reply, "
            "so the fill's backlog (backlog_before) goes up while recording, not before",
            "backlog_at_start/peak_backlog_bytes": "the sync backlog (sealed entries not yet acknowledged; the "
            "open segment is not in it) at the start reply, and the largest seen (sampled every 0.5 s)",
            "backlog_first_empty_after_s": "seconds after the start reply until that backlog was first seen empty",
            "sync_at_stop": "the sync status at the stop request: backlog left (entries, bytes; the worker "
            "refreshes it once per pass, so it can lag by interval_s); last_error may be from the unreachable "
            "period before the start",
            "drained_after_stop_s": "seconds after the stop request until headquarters stored every sealed "
            "entry of the unit (the last segment and the record-stop event included; files counted on both "
            "sides); None: not within 120 s",
        },
    }


def run(quick: bool, workdir: Path) -> Result:
    fill_s = 20 if quick else 60
    record_s = 20 if quick else 60
    cap_bps = 8_000_000 if quick else 20_000_000
    target_cuts = 5 if quick else 10
    repeats = 3 if quick else 5
    cut_runs = 3 if quick else 5
    folder = workdir / "sync"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    out: Result = {
        "machine": machine(),
        "params": {"fill_s": fill_s, "record_s": record_s, "camera": f"{WIDTH}x{HEIGHT}@{FPS}",
                   "chunk_bytes": CHUNK_BYTES, "cap_bps": cap_bps, "uncapped_repeats": repeats,
                   "cuts_wanted_per_run": target_cuts, "cut_runs": cut_runs, "cut_seeds_from": CUT_SEED,
                   "device_id": DEVICE_ID, "loopback": "127.0.0.1 only", "folder": str(folder)},
    }
    log.info("sync: headquarters keys, a unit provisioned and enrolled")
    hq_pristine, unit_pristine = provision(folder)
    log.info("sync: filling the unit's store: the agent records %d s with sync off", fill_s)
    out["backlog"] = fill(unit_pristine, fill_s)
    timeout_s = 600.0
    out["uncapped"] = guarded("uncapped", lambda: uncapped(hq_pristine, unit_pristine, folder, repeats, timeout_s))
    out["capped"] = guarded("capped", lambda: capped(hq_pristine, unit_pristine, folder, cap_bps))
    wire = out["capped"].get("wire_bytes_up")
    seeds = [CUT_SEED + i for i in range(cut_runs)]
    out["cuts"] = guarded("cuts", lambda: cuts(hq_pristine, unit_pristine, folder, seeds, target_cuts, wire,
                                               timeout_s))
    rec: Result = {}
    for label, bps in (("uncapped", 0), ("capped", RECORDER_CAP_BPS)):
        log.info("sync: the agent records %d s at %dx%d while it syncs (cap %d bit/s)", record_s, WIDTH, HEIGHT, bps)
        rec[label] = guarded(f"recorder while syncing ({label})",
                             partial(recorder_while_syncing, hq_pristine, unit_pristine, folder, record_s, bps))
    rec["what"] = ("the real agent recording while it syncs, twice: uncapped (the fill's backlog goes up in a "
                   "burst of a few seconds, then each segment as it is sealed: the most CPU at once) and capped at "
                   f"{RECORDER_CAP_BPS} bit/s (a cellular budget: the sync thread is busy pacing the upload for "
                   "the whole recording, and a backlog can be left at the stop)")
    out["recorder_while_syncing"] = rec
    out["summary"] = {
        "uncapped_sync_MB_per_s": out["uncapped"].get("sync", {}).get("MB_per_s"),
        "uncapped_curl_MB_per_s": out["uncapped"].get("curl", {}).get("MB_per_s"),
        "ratio_sync_over_curl": out["uncapped"].get("ratio_sync_over_curl"),
        "ratio_best_sync_over_best_curl": out["uncapped"].get("ratio_best_sync_over_best_curl"),
        "ratio_capped_achieved_over_cap": out["capped"].get("ratio_achieved_over_cap"),
        "cap_goal": CAP_GOAL,
        "cuts": out["cuts"].get("cuts"),
        "resent_bytes_per_cut": out["cuts"].get("resent_bytes_per_cut"),
        "resent_chunks_per_cut": out["cuts"].get("resent_chunks_per_cut"),
        "worst_run_resent_chunks_per_cut": out["cuts"].get("worst_run_resent_chunks_per_cut"),
        "resent_goal_max_chunks_per_cut": 1,
        "recorder_dropped_while_syncing": {k: rec[k].get("dropped_total") for k in ("uncapped", "capped")},
        "dropped_goal": 0,
        "sync_backlog_at_stop": {k: rec[k].get("sync_at_stop", {}).get("backlog") for k in ("uncapped", "capped")},
        "drained_after_stop_s": {k: rec[k].get("drained_after_stop_s") for k in ("uncapped", "capped")},
        "what": "the headline figures of the parts below, each explained in its own 'what'",
    }
    out["what"] = ("backlog: the evidence every part uploads (its source and sizes); uncapped: sync vs curl "
                   "throughput; capped: achieved rate vs the cap; cuts: bytes re-sent per connection cut; "
                   "recorder_while_syncing: dropped frames while the agent records and syncs. Each part runs "
                   "against a fresh headquarters (bodycam-hq serve on 127.0.0.1:0) and a fresh copy of the unit")
    return out
