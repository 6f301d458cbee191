"""The decrypt component: the only process that holds headquarters' private key (``hq.key``).

Web workers never load the key. They send a segment's ciphertext (or a manifest's sealed member)
over a unix socket and read the plaintext back (``hq.decryptwire``); the plaintext goes back to
them through the socket only, never a file. The daemon knows no index, no store, no HTTP and no
user: whoever may connect to its socket may decrypt, so the socket is 0600, or 0660 with a group
(``--group``), in a folder of its own; who may *ask* is decided by the web application, which
audits every playback before it asks.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import resource
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from agent.evidence.decrypt import DecryptError, open_sealed_metadata, open_stream
from agent.evidence.keys import HqPrivateKey, fingerprint, public_der
from agent.textsafe import safe_text
from hq.decryptwire import DATA, END, ERROR, MAX_REQUEST_LINE, WireError, frame, json_frame, parse_request

log = logging.getLogger(__name__)

PR_SET_DUMPABLE = 4


class DecryptdError(Exception):
    """The daemon cannot start (socket in use, folder unsafe); the message says what to do."""


@dataclass(frozen=True, slots=True)
class Limits:
    """How much one daemon does at once and for how long.

    ``max_jobs`` requests decrypt at once; a request waits at most ``queue_s`` for a slot, then is
    answered ``busy``; at most ``max_connections`` connections are open (more are answered
    ``busy`` at once); a request's whole exchange must end within ``deadline_s``, and no read may
    wait longer than ``idle_s``. ``max_segment_bytes`` bounds one request's body.
    """

    max_jobs: int = 2
    queue_s: float = 5.0
    max_connections: int = 16
    deadline_s: float = 120.0
    idle_s: float = 15.0
    max_segment_bytes: int = 4 * 1024**3


class _Deadline(Exception):
    pass


class _Body:
    """Exactly ``length`` bytes of the request body from the connection, within the deadline."""

    def __init__(self, rfile: BinaryIO, sock: socket.socket, length: int, deadline: float, idle_s: float) -> None:
        self._rfile, self._sock, self._left, self._deadline, self._idle_s = rfile, sock, length, deadline, idle_s

    def read(self, n: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        n = self._left if n < 0 else min(n, self._left)
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise _Deadline("the request's deadline passed while reading its body")
        self._sock.settimeout(min(remaining, self._idle_s))
        try:
            data = self._rfile.read(n)
        except TimeoutError as exc:
            raise _Deadline("the client sent nothing for too long") from exc
        self._left -= len(data)
        return data


class Decryptor:
    """Answers decrypt requests with one private key. Thread-safe: the key is only read, and
    ``slots`` bounds how many requests decrypt at once."""

    def __init__(self, key: HqPrivateKey, limits: Limits, now_s: Callable[[], float] = time.monotonic) -> None:
        self._key = key
        self.limits = limits
        self.fingerprint = fingerprint(public_der(key.public_key()))
        self._slots = threading.BoundedSemaphore(limits.max_jobs)
        self._guard = threading.Lock()
        self.busy = 0
        self.connections = 0
        self._now_s = now_s

    def serve_connection(self, sock: socket.socket, rfile: BinaryIO, wfile: BinaryIO) -> None:
        deadline = self._now_s() + self.limits.deadline_s
        peer = _peer(sock)
        try:
            sock.settimeout(self.limits.idle_s)
            line = rfile.readline(MAX_REQUEST_LINE)
            req = parse_request(line, self.limits.max_segment_bytes)
        except (WireError, TimeoutError, OSError) as exc:
            _answer(wfile, json_frame(ERROR, {"code": "bad-request", "error": str(exc)}))
            log.warning("refused a request from %s: %s", peer, safe_text(str(exc)))
            return
        if req["op"] == "ping":
            with self._guard:
                busy = self.busy
            _answer(wfile, json_frame(END, {"ok": True, "hq_key": self.fingerprint, "busy": busy,
                                             "max_jobs": self.limits.max_jobs}))
            return
        what = safe_text(f"{req['op']} {req['device_id']} seq {req['seq']} for {peer}")
        if not self._slots.acquire(timeout=max(0.0, min(self.limits.queue_s, deadline - self._now_s()))):
            _answer(wfile, json_frame(ERROR, {"code": "busy", "error": "every decrypt slot is taken; try again"}))
            log.warning("busy: refused %s", what)
            return
        with self._guard:
            self.busy += 1
        try:
            outcome = self._job(req, sock, rfile, wfile, deadline)
        finally:
            with self._guard:
                self.busy -= 1
            self._slots.release()
        log.info("%s: %s", what, outcome)

    def _job(self, req: dict[str, Any], sock: socket.socket, rfile: BinaryIO, wfile: BinaryIO, deadline: float) -> str:
        try:
            if req["op"] == "metadata":
                meta = open_sealed_metadata(req["device_id"], req["seq"], req["sealed"], self._key)
                _answer(wfile, json_frame(END, {"ok": True, "metadata": meta}))
                return "metadata opened"
            body = _Body(rfile, sock, req["length"], deadline, self.limits.idle_s)

            def sink(plaintext: bytes) -> None:
                if self._now_s() > deadline:
                    raise _Deadline("the request's deadline passed while decrypting")
                wfile.write(frame(DATA, plaintext))

            opened = open_stream(body, self._key, sink, recovered=bool(req.get("recovered", False)))  # type: ignore[arg-type]
            if body.read(1):
                raise DecryptError("bytes after the segment's end")
            if opened.problems:
                raise DecryptError("; ".join(opened.problems))
            want = req.get("plaintext_sha256")
            if want is not None and opened.plaintext_sha256 != want:
                _answer(wfile, json_frame(ERROR, {
                    "code": "mismatch", "error": "decrypted content does not match the manifest's plaintext hash"}))
                return "plaintext hash mismatch"
            _answer(wfile, json_frame(END, {"ok": True, "sha256": opened.plaintext_sha256,
                                            "length": opened.plaintext_length, "chunks": opened.chunks}))
            return f"{opened.plaintext_length} bytes decrypted"
        except DecryptError as exc:
            _answer(wfile, json_frame(ERROR, {"code": "decrypt", "error": str(exc)}))
            return f"refused: {safe_text(str(exc))}"
        except _Deadline as exc:
            _answer(wfile, json_frame(ERROR, {"code": "deadline", "error": str(exc)}))
            return f"stopped: {exc}"
        except (BrokenPipeError, ConnectionError):
            return "the client went away"
        except (OSError, ValueError, KeyError, TypeError) as exc:  # a broken file the scanner did not expect
            log.exception("decrypt request failed")
            _answer(wfile, json_frame(ERROR, {"code": "internal", "error": type(exc).__name__}))
            return "failed"


def _answer(wfile: BinaryIO, data: bytes) -> None:
    try:
        wfile.write(data)
        wfile.flush()
    except OSError:
        pass


def _peer(sock: socket.socket) -> str:
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, _gid = struct.unpack("3i", creds)
    except OSError:
        return "unknown peer"
    return f"uid={uid},pid={pid}"


class _Handler(socketserver.StreamRequestHandler):
    server: DecryptServer

    def handle(self) -> None:
        d = self.server.decryptor
        with self.server.count_guard:
            over = d.connections >= d.limits.max_connections
            if not over:
                d.connections += 1
        if over:
            _answer(self.wfile, json_frame(ERROR, {"code": "busy", "error": "too many connections; try again"}))  # type: ignore[arg-type]
            return
        try:
            d.serve_connection(self.connection, self.rfile, self.wfile)  # type: ignore[arg-type]
        finally:
            with self.server.count_guard:
                d.connections -= 1


class DecryptServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """The listening socket; one thread per connection, bounded by the decryptor's limits."""

    daemon_threads = True
    allow_reuse_address = False

    def __init__(self, path: Path, decryptor: Decryptor, group: int | None = None) -> None:
        self.decryptor = decryptor
        self.count_guard = threading.Lock()
        self.path = path
        _clear_stale(path)
        old = os.umask(0o177 if group is None else 0o117)
        try:
            super().__init__(str(path), _Handler)
        finally:
            os.umask(old)
        if group is not None:
            os.chown(path, -1, group)
            os.chmod(path, 0o660)
        else:
            os.chmod(path, 0o600)

    def server_close(self) -> None:
        super().server_close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def _clear_stale(path: Path) -> None:
    """Remove a socket left by a daemon that died; refuse if one still answers on it."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or not path.is_socket():
        raise DecryptdError(f"{path} exists and is not a socket: choose another --socket or remove it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()
        return
    finally:
        probe.close()
    raise DecryptdError(f"a decrypt daemon already listens on {path}: stop it first")


def check_folder(folder: Path) -> None:
    """The socket's folder must be the caller's and closed to others (no one swaps the socket)."""
    st = folder.stat()
    if st.st_uid != os.geteuid():
        raise DecryptdError(f"{folder} belongs to uid {st.st_uid}, not to this user: use a folder of your own")
    if st.st_mode & 0o002:
        raise DecryptdError(f"{folder} is writable by everyone: use a folder of mode 0750 or tighter")


def harden() -> None:
    """No core dumps and no ptrace by other processes of the same user: the key stays in here."""
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except OSError:  # a service manager's seccomp filter may refuse it; its LimitCORE=0 does the same
        log.info("could not set RLIMIT_CORE (the service manager's limit applies)")
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        refused = libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0
    except (OSError, AttributeError):
        refused = True
    if refused:
        log.warning("could not mark the process non-dumpable: processes of this user can read its memory")

