"""The local control socket: a unix socket (mode 0600), one JSON object per line each way.

Requests ``{"cmd": "start"}``; answers ``{"ok": true, "data": {...}}`` or
``{"ok": false, "error": {"code": "...", "message": "..."}}``. The caller's uid (SO_PEERCRED)
becomes the actor in the audit log and decides its access (``agent.unitapi.ctl``).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import socketserver
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.unitapi.errors import Refused

log = logging.getLogger(__name__)

MAX_LINE = 4096
ControlError = Refused  # the unit API's one refusal, by the name the socket has always used


@dataclass(frozen=True, slots=True)
class Peer:
    """Who is on the other end of a connection, as the kernel says (None: it could not say)."""

    uid: int | None
    pid: int | None

    @property
    def actor(self) -> str:
        return "ctl:unknown" if self.uid is None else f"ctl:uid={self.uid},pid={self.pid}"


Handler = Callable[[str, Peer, dict[str, Any]], dict[str, Any]]


def peer_of(sock: socket.socket) -> Peer:
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, _gid = struct.unpack("3i", creds)
        return Peer(uid, pid)
    except OSError:
        return Peer(None, None)


def answer_line(raw: bytes, peer: Peer, handler: Handler) -> dict[str, Any]:
    """Pure request handling: parse one line, dispatch, shape the answer. Never raises."""
    try:
        req = json.loads(raw.decode("utf-8"))
        if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
            raise ControlError("bad-request", 'expected a JSON object with a "cmd" string')
        args = req.get("args", {})
        if not isinstance(args, dict):
            raise ControlError("bad-request", '"args" must be an object')
        return {"ok": True, "data": handler(req["cmd"], peer, args)}
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {"ok": False, "error": {"code": "bad-request", "message": "not a JSON line"}}
    except ControlError as exc:
        return {"ok": False, "error": exc.as_dict()}
    except Exception as exc:
        log.exception("control command failed")
        return {"ok": False, "error": {"code": "failed", "message": f"{type(exc).__name__}: {exc}"}}


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    handler: Handler


class _Conn(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        peer = peer_of(self.request)
        while True:
            raw = self.rfile.readline(MAX_LINE + 1)
            if not raw:
                return
            if len(raw) > MAX_LINE:
                reply = {"ok": False, "error": {"code": "too-long", "message": f"line over {MAX_LINE} bytes"}}
                self.wfile.write(json.dumps(reply).encode() + b"\n")
                return
            reply = answer_line(raw, peer, self.server.handler)
            self.wfile.write(json.dumps(reply, default=str).encode() + b"\n")


class ControlServer:
    """Serves the socket on its own thread; ``close`` removes it (only if it is still this server's)."""

    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        if path.exists() or path.is_symlink():
            path.unlink()
        old = os.umask(0o177)
        try:
            self._server = _Server(str(path), _Conn)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        self._inode = os.stat(path).st_ino
        self._server.handler = handler
        self._thread = threading.Thread(target=self._server.serve_forever, name="control", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        try:
            if os.stat(self.path).st_ino == self._inode:  # never remove a socket another process made
                self.path.unlink()
        except FileNotFoundError:
            pass


def request(path: Path, cmd: str, args: dict[str, Any] | None = None, timeout_s: float = 15.0) -> dict[str, Any]:
    """Client side: one request, one answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        s.connect(str(path))
        s.sendall(json.dumps({"cmd": cmd, "args": args or {}}).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            part = s.recv(65536)
            if not part:
                break
            buf += part
    reply: dict[str, Any] = json.loads(buf.decode())
    return reply
