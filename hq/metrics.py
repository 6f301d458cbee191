"""Headquarters' Prometheus metrics (prometheus-client, the reference client), and their listener.

The metric objects live here behind a small interface, so that the ingest pool and the HTTP
layer count without knowing Prometheus: ``ingest_done(bytes, seconds, outcome)``,
``heartbeat_done(seconds)``, ``auth_refused(reason)``, ``queue_depth(n)``... Each ``Metrics`` has
its own registry (several services in one test process do not collide). They are served on a
separate listener, loopback only (``--metrics-listen 127.0.0.1:9464``), never on the public port.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

OUTCOMES = ("stored", "quarantined", "duplicate", "failed")
_LATENCY_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_HEARTBEAT_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """The counters, gauges and histograms of one headquarters node."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.ingest_bytes = Counter("bodycam_hq_ingest_bytes", "Bytes of completed uploads decided (stored, "
                                    "quarantined or duplicate)", registry=r)
        self.ingest_seconds = Histogram("bodycam_hq_ingest_seconds", "Time from a completing PATCH's body to "
                                        "its answer (verification and storage)", ["outcome"],
                                        buckets=_LATENCY_BUCKETS_S, registry=r)
        self.verifications = Counter("bodycam_hq_verifications", "Completed uploads verified", ["outcome"],
                                     registry=r)
        self.quarantines = Counter("bodycam_hq_quarantines", "Uploads quarantined", registry=r)
        self.receipts = Counter("bodycam_hq_receipts", "Receipts issued", registry=r)
        self.heartbeat_seconds = Histogram("bodycam_hq_heartbeat_seconds", "Time to answer a heartbeat",
                                           buckets=_HEARTBEAT_BUCKETS_S, registry=r)
        self.auth_refusals = Counter("bodycam_hq_auth_refusals", "Requests refused before authentication "
                                     "succeeded, by reason", ["reason"], registry=r)
        self.queue = Gauge("bodycam_hq_ingest_queue_depth", "Completed uploads waiting for verification",
                           registry=r)
        self.connections_refused = Counter("bodycam_hq_connections_refused", "Connections closed at once: "
                                           "over the total or per-source cap", registry=r)
        self.requests = Counter("bodycam_hq_requests", "Requests answered, by route and status",
                                ["route", "status"], registry=r)

    def ingest_done(self, size_bytes: int, seconds: float, outcome: str) -> None:
        """A completed upload was decided: ``stored``, ``quarantined``, ``duplicate`` or ``failed``."""
        self.ingest_bytes.inc(size_bytes)
        self.ingest_seconds.labels(outcome=outcome).observe(seconds)
        self.verifications.labels(outcome=outcome).inc()
        if outcome == "quarantined":
            self.quarantines.inc()
        elif outcome in ("stored", "duplicate"):
            self.receipts.inc()

    def heartbeat_done(self, seconds: float) -> None:
        self.heartbeat_seconds.observe(seconds)

    def auth_refused(self, reason: str) -> None:
        self.auth_refusals.labels(reason=reason).inc()

    def queue_depth(self, depth: int) -> None:
        self.queue.set(depth)

    def watch_queue(self, depth: Callable[[], int]) -> None:
        """Read the queue depth from ``depth()`` at each scrape."""
        self.queue.set_function(lambda: float(depth()))

    def connection_refused(self) -> None:
        self.connections_refused.inc()

    def request_done(self, route: str, status: int) -> None:
        self.requests.labels(route=route, status=str(status)).inc()


@dataclass
class MetricsListener:
    """The metrics endpoint: a small HTTP server on its own (loopback) address and thread."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def serve_metrics(metrics: Metrics, host: str, port: int) -> MetricsListener:
    server, thread = start_http_server(port, addr=host, registry=metrics.registry)
    return MetricsListener(server, thread)
