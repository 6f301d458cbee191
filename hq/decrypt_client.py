"""The web side of the decrypt component: asks ``bodycam-hq decryptd`` over its unix socket.

Holds no key. Plaintext comes back into memory only (``bytes``), checked against the manifest's
plaintext hash by the daemon before the answer counts.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO

from hq.decryptwire import DATA, END, ERROR, FRAME_HEAD, MAX_FRAME, request_line


class DecryptClientError(Exception):
    """The daemon refused or could not be asked; ``code`` is its error code (or ``unavailable``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class DecryptClient:
    """One request per connection to the daemon at ``socket_path``. Thread-safe (no shared state).

    ``timeout_s`` bounds each exchange as a whole; ``max_plaintext_bytes`` what one segment may
    put in this process's memory.
    """

    def __init__(self, socket_path: Path, timeout_s: float = 60.0, max_plaintext_bytes: int = 512 * 1024**2) -> None:
        self.socket_path = socket_path
        self.timeout_s = timeout_s
        self.max_plaintext_bytes = max_plaintext_bytes

    def ping(self) -> dict[str, Any]:
        with self._connect() as sock:
            sock.sendall(request_line({"op": "ping"}))
            return self._read_answer(sock, time.monotonic() + self.timeout_s, None)[1]

    def metadata(self, device_id: str, seq: int, sealed: str) -> dict[str, Any]:
        """The opened sealed metadata of (device, seq)'s manifest: ``{"gnss": [...], "notes": [...]}``."""
        with self._connect() as sock:
            sock.sendall(request_line({"op": "metadata", "device_id": device_id, "seq": seq, "sealed": sealed}))
            doc = self._read_answer(sock, time.monotonic() + self.timeout_s, None)[1]
        meta = doc.get("metadata")
        if not isinstance(meta, dict):
            raise DecryptClientError("internal", "the daemon's answer holds no metadata object")
        return meta

    def segment(
        self, source: BinaryIO, length: int, *, device_id: str, seq: int, plaintext_sha256: str | None,
        recovered: bool = False,
    ) -> bytes:
        """The plaintext of the ``length``-byte segment read from ``source`` (the store's stream)."""
        deadline = time.monotonic() + self.timeout_s
        with self._connect() as sock:
            sock.sendall(request_line({"op": "segment", "device_id": device_id, "seq": seq, "length": length,
                                       "recovered": recovered, "plaintext_sha256": plaintext_sha256}))
            failure: list[BaseException] = []
            sender = threading.Thread(target=_send, args=(sock, source, length, failure), daemon=True,
                                      name="decrypt-send")
            sender.start()
            try:
                parts, _ = self._read_answer(sock, deadline, self.max_plaintext_bytes)
            finally:
                sock.shutdown(socket.SHUT_RDWR)
                sender.join(timeout=5)
            if failure and not isinstance(failure[0], OSError):
                raise DecryptClientError("internal", f"reading the stored segment: {failure[0]}")
        return b"".join(parts)

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout_s)
        try:
            sock.connect(str(self.socket_path))
        except OSError as exc:
            sock.close()
            raise DecryptClientError(
                "unavailable", f"the decrypt daemon does not answer on {self.socket_path}: {exc.strerror or exc}; "
                "start `bodycam-hq decryptd`") from exc
        return sock

    def _read_answer(
        self, sock: socket.socket, deadline: float, limit: int | None
    ) -> tuple[list[bytes], dict[str, Any]]:
        parts: list[bytes] = []
        total = 0
        rfile = sock.makefile("rb")
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DecryptClientError("deadline", f"no answer from the decrypt daemon within {self.timeout_s} s")
                sock.settimeout(remaining)
                try:
                    head = rfile.read(FRAME_HEAD.size)
                    if len(head) < FRAME_HEAD.size:
                        raise DecryptClientError("internal", "the decrypt daemon closed the connection mid-answer")
                    kind, size = FRAME_HEAD.unpack(head)
                    if size > MAX_FRAME:
                        raise DecryptClientError("internal", f"a frame of {size} bytes from the decrypt daemon")
                    payload = rfile.read(size)
                except TimeoutError as exc:
                    raise DecryptClientError("deadline", "the decrypt daemon stalled") from exc
                if len(payload) < size:
                    raise DecryptClientError("internal", "the decrypt daemon closed the connection mid-frame")
                if kind == DATA:
                    total += size
                    if limit is not None and total > limit:
                        raise DecryptClientError("too-large", f"the plaintext exceeds {limit} bytes")
                    parts.append(payload)
                    continue
                if kind not in (END, ERROR):
                    raise DecryptClientError("internal", f"unknown frame type {kind!r} from the decrypt daemon")
                doc = json.loads(payload)
                if kind == ERROR:
                    raise DecryptClientError(str(doc.get("code", "internal")), str(doc.get("error", "refused")))
                return parts, doc
        finally:
            rfile.close()


def _send(sock: socket.socket, source: BinaryIO, length: int, failure: list[BaseException]) -> None:
    left = length
    try:
        while left > 0:
            block = source.read(min(left, 256 * 1024))
            if not block:
                raise ValueError(f"the stored segment ended {left} bytes early")
            sock.sendall(block)
            left -= len(block)
    except Exception as exc:  # noqa: BLE001 - reported by the reading side
        failure.append(exc)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
