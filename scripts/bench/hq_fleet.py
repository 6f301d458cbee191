"""hq_fleet section: headquarters at fleet scale, 1 and 2 nodes pinned to separate cores.

A real PostgreSQL (Debian's packages) and a real S3 server with Object Lock (SeaweedFS from its
PyPI wheel) are started in a temporary folder; N ``bodycam-hq serve`` nodes over them behind a
real HAProxy terminating TLS (tests/fleet_util.py, the same harness as the fleet tests). For each
N in (1, 2):

- verified ingest: 20 units upload a sealed segment each at once, in 4 MiB PATCHes; MB/s from the
  first byte to the last receipt, and per CPU-second of the nodes; p50/p99 seconds from each
  upload's last byte to its receipt;
- heartbeats: 1,000 simulated units send one signed heartbeat each, from 32 client threads, as
  fast as the nodes answer; heartbeats per second and p50/p99 latency.

Against the ceilings on the same machine: SHA-256 line rate (verification cannot beat hashing the
bytes once) and curl PATCHing the same chunks into nginx over TLS (the transport). The load
generator shares the two cores with the nodes: the figures are for this machine, not a node's
ceiling. Figures only; nothing is asserted.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

from tests.evidence_util import ChainBuilder
from tests.fleet_util import Device, heartbeat_storm, running_fleet, sim_units, upload
from tests.gpsd_util import free_port
from tests.pg_util import PostgresCluster, pg_bin_dir
from tests.s3_util import S3Server, fresh_bucket, seaweedfs

from .ceilings import curl_into_nginx, sha256_line_rate
from .common import MB, BenchError, Result, guarded, ratio

log = logging.getLogger("bench.hq_fleet")

CHUNK_BYTES = 4 * 1024 * 1024
UPLOADERS = 20
UNITS = 1000


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def one_setup(work: Path, nodes: int, database_url: str, s3: S3Server, segment_bytes: int) -> Result:
    """The figures of one fleet of ``nodes`` nodes, each pinned to its own core."""
    store_url = s3.store_url(fresh_bucket("bench"), retention_days=1)
    node_args = ["--max-connections-per-source", "2048"]  # every simulated unit comes from 127.0.0.1
    with running_fleet(work, database_url, store_url, s3.env(), s3.client(), nodes=nodes, balance="roundrobin",
                       node_args=node_args, pin_cpus=True) as fleet:
        builders = [ChainBuilder(work / f"u{i}", device_id=f"bench-up-{i:02d}") for i in range(UPLOADERS)]
        fleet.enrol((b.device_id, b.signer.public_key()) for b in builders)
        segments = [b.segment(payload=os.urandom(segment_bytes)) for b in builders]
        total = sum(s.stat().st_size for s in segments)
        cpu0, t0 = fleet.cpu_s(), time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(max_workers=UPLOADERS) as pool:
            futures = [pool.submit(upload, fleet, Device(b.device_id, b.signer), s, 0, CHUNK_BYTES)
                       for b, s in zip(builders, segments, strict=True)]
            done = [f.result(timeout=600) for f in futures]
        wall, cpu = time.monotonic() - t0, fleet.cpu_s() - cpu0
        to_receipt = [d[2] for d in done]
        ingest_result: Result = {
            "uploads": len(done),
            "bytes": total,
            "wall_s": round(wall, 2),
            "MB_per_s": round(total / MB / wall, 1),
            "nodes_cpu_s": round(cpu, 2),
            "MB_per_cpu_s": round(total / MB / cpu, 1) if cpu > 0 else None,
            "last_byte_to_receipt_p50_s": round(statistics.median(to_receipt), 3),
            "last_byte_to_receipt_p99_s": _pct(to_receipt, 0.99),
        }
        units = sim_units(UNITS, prefix=f"bench{nodes}")
        fleet.enrol((u.device_id, u.keystore.public_key()) for u in units)
        storm = heartbeat_storm(units, fleet.origin, fleet.keys / "ca.pem", rounds=1, interval_s=0.0, threads=32)
        return {"nodes": nodes, "ingest": ingest_result, "heartbeats": storm.summary()}


def run(quick: bool) -> Result:
    if pg_bin_dir() is None:
        raise BenchError("PostgreSQL is not installed (apt-get install -y postgresql)")
    segment_bytes = 2_000_000 if quick else 16_000_000
    out: Result = {"segment_bytes": segment_bytes, "uploaders": UPLOADERS, "units": UNITS,
                   "cpus": len(os.sched_getaffinity(0))}
    with tempfile.TemporaryDirectory(prefix="bodycam-bench-fleet-") as tmp:
        work = Path(tmp)
        out["sha256_line_rate"] = guarded("sha256", lambda: sha256_line_rate(256 * 1024 * 1024))
        curl_bytes = UPLOADERS * segment_bytes
        out["curl_into_nginx"] = guarded("curl into nginx", lambda: curl_into_nginx(
            work / "nginx", curl_bytes, CHUNK_BYTES, free_port(), timeout_s=300))
        cluster = PostgresCluster().start()
        try:
            with seaweedfs(work / "s3") as s3:
                for nodes in (1, 2):
                    log.info("fleet of %d node(s)", nodes)
                    database_url = cluster.create_database(f"bench{nodes}")
                    (work / f"n{nodes}").mkdir()
                    out[f"nodes_{nodes}"] = guarded(f"{nodes} node(s)", lambda n=nodes, u=database_url: one_setup(
                        work / f"n{n}", n, u, s3, segment_bytes))
        finally:
            cluster.stop()
    for nodes in (1, 2):
        section = out.get(f"nodes_{nodes}", {})
        mbps = section.get("ingest", {}).get("MB_per_s") if isinstance(section, dict) else None
        section_ratios = {
            "vs_curl_into_nginx": ratio(mbps, out["curl_into_nginx"].get("MB_per_s")),
            "vs_sha256_line_rate": ratio(mbps, out["sha256_line_rate"].get("MB_per_s")),
        }
        if isinstance(section, dict) and "ingest" in section:
            section["ingest"]["ratios"] = section_ratios
    return out
