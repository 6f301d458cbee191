"""A user-space UDP relay that drops and delays packets on demand (the kernel's netem is not available here).

``Impairment(target_port)`` listens on a free 127.0.0.1 UDP port (``port``) and relays datagrams
between the first client that writes to it and ``127.0.0.1:target_port``, both ways, on one
thread. ``drop_for(seconds)`` drops every datagram in both directions for that long (a loss
burst: a tunnel, a lift); ``delay_s`` holds each datagram that long before relaying it. Counts
what it relayed and dropped. ``close()`` ends it.
"""

from __future__ import annotations

import heapq
import selectors
import socket
import threading
import time


class Impairment:
    def __init__(self, target_port: int, delay_s: float = 0.0) -> None:
        self.target = ("127.0.0.1", target_port)
        self.delay_s = delay_s
        self._front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._front.bind(("127.0.0.1", 0))
        self.port: int = self._front.getsockname()[1]
        self._back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._back.bind(("127.0.0.1", 0))
        self._client: tuple[str, int] | None = None
        self._drop_until = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._queue: list[tuple[float, int, bytes, socket.socket, tuple[str, int]]] = []
        self._seq = 0
        self.relayed = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="udp-impair", daemon=True)
        self._thread.start()

    def drop_for(self, seconds: float) -> float:
        """Drop everything for ``seconds`` from now; returns when the burst ends (time.monotonic)."""
        with self._lock:
            self._drop_until = time.monotonic() + seconds
            return self._drop_until

    def _dropping(self) -> bool:
        with self._lock:
            return time.monotonic() < self._drop_until

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._front, selectors.EVENT_READ)
        sel.register(self._back, selectors.EVENT_READ)
        while not self._stop.is_set():
            wait = 0.05 if not self._queue else max(0.0, min(0.05, self._queue[0][0] - time.monotonic()))
            for key, _ in sel.select(wait):
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                try:
                    data, addr = sock.recvfrom(65536)
                except OSError:
                    continue
                if sock is self._front:
                    self._client = addr
                    out, to = self._back, self.target
                elif self._client is not None:
                    out, to = self._front, self._client
                else:
                    continue
                if self._dropping():
                    self.dropped += 1
                    continue
                self._seq += 1
                heapq.heappush(self._queue, (time.monotonic() + self.delay_s, self._seq, data, out, to))
            now = time.monotonic()
            while self._queue and self._queue[0][0] <= now:
                _, _, data, out, to = heapq.heappop(self._queue)
                try:
                    out.sendto(data, to)
                    self.relayed += 1
                except OSError:
                    self.dropped += 1
        sel.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._front.close()
        self._back.close()
