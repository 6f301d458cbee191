"""The decrypt component's wire protocol on its unix socket (``bodycam-hq decryptd``): pure framing.

One request per connection. The client sends one JSON line (at most ``MAX_REQUEST_LINE`` bytes)
and, for ``op = "segment"``, exactly ``length`` bytes of a segment file after it. The daemon
answers with frames, each one type byte, a 4-byte big-endian length and the payload:

* ``D``: plaintext (the segment's Matroska bytes, in order, one frame per decrypted chunk);
* ``E``: the end, a JSON object (``{"ok": true, ...}``): the request succeeded;
* ``X``: the end, a JSON object ``{"code": ..., "error": ...}``: it failed (nothing before it counts).

Requests:

* ``{"v": 1, "op": "ping"}``: ``E {"ok": true, "hq_key": <fingerprint>, "busy": n, "max_jobs": m}``.
* ``{"v": 1, "op": "segment", "length": N, "recovered": bool, "plaintext_sha256": hex | null,
  "device_id": str, "seq": int}``: the segment's plaintext as ``D`` frames, then
  ``E {"ok": true, "sha256": hex, "length": n, "chunks": n}``; when ``plaintext_sha256`` is given
  and the plaintext differs, ``X`` with code ``mismatch`` instead of ``E``.
* ``{"v": 1, "op": "metadata", "device_id": str, "seq": int, "sealed": base64}``: the manifest's
  sealed metadata, ``E {"ok": true, "metadata": {...}}``.

Error codes: ``bad-request``, ``busy`` (every job slot taken; try again), ``deadline``, ``decrypt``
(the file does not open with this key, or fails authentication), ``mismatch``, ``internal``.
"""

from __future__ import annotations

import json
import struct
from typing import Any

VERSION = 1
MAX_REQUEST_LINE = 4096
FRAME_HEAD = struct.Struct(">cI")
MAX_FRAME = 4 * 1024 * 1024
DATA, END, ERROR = b"D", b"E", b"X"
OPS = ("ping", "segment", "metadata")
CODES = ("bad-request", "busy", "deadline", "decrypt", "mismatch", "internal")


class WireError(Exception):
    """A request or frame that does not follow this protocol; the message says what is wrong."""


def frame(kind: bytes, payload: bytes) -> bytes:
    if len(payload) > MAX_FRAME:
        raise WireError(f"frame of {len(payload)} bytes exceeds {MAX_FRAME}")
    return FRAME_HEAD.pack(kind, len(payload)) + payload


def json_frame(kind: bytes, doc: dict[str, Any]) -> bytes:
    return frame(kind, json.dumps(doc, separators=(",", ":"), sort_keys=True).encode())


def request_line(doc: dict[str, Any]) -> bytes:
    line = json.dumps({"v": VERSION, **doc}, separators=(",", ":"), sort_keys=True).encode() + b"\n"
    if len(line) > MAX_REQUEST_LINE:
        raise WireError(f"request line of {len(line)} bytes exceeds {MAX_REQUEST_LINE}")
    return line


def parse_request(line: bytes, max_length: int) -> dict[str, Any]:
    """The request of one JSON line, its members checked; raises :class:`WireError`."""
    if not line.endswith(b"\n"):
        raise WireError(f"the request line must end with a newline within {MAX_REQUEST_LINE} bytes")
    try:
        doc = json.loads(line)
    except ValueError as exc:
        raise WireError(f"the request line is not JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("v") != VERSION:
        raise WireError(f"the request must be a JSON object with v = {VERSION}")
    op = doc.get("op")
    if op not in OPS:
        raise WireError(f"op must be one of {', '.join(OPS)}")
    if op == "ping":
        return doc
    _need_str(doc, "device_id")
    seq = doc.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise WireError("seq must be an integer >= 0")
    if op == "metadata":
        _need_str(doc, "sealed")
        return doc
    length = doc.get("length")
    if not isinstance(length, int) or isinstance(length, bool) or not 0 < length <= max_length:
        raise WireError(f"length must be an integer from 1 to {max_length}")
    if not isinstance(doc.get("recovered", False), bool):
        raise WireError("recovered must be true or false")
    want = doc.get("plaintext_sha256")
    if want is not None and not (isinstance(want, str) and len(want) == 64):
        raise WireError("plaintext_sha256 must be 64 hex digits or null")
    return doc


def _need_str(doc: dict[str, Any], key: str) -> None:
    value = doc.get(key)
    if not isinstance(value, str) or not value or len(value) > 2048:
        raise WireError(f"{key} must be a non-empty string")
