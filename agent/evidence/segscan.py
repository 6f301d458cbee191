"""Reading a segment file record by record, and planning the salvage of an unsealed one.

A segment file is ``MAGIC`` then records ``type (1 byte) || length (u32 BE) || body``:
one header ``H``, data chunks ``D`` with signed checkpoints ``C`` between them, and the
signed manifest ``M`` last. An event entry is ``MAGIC`` then ``M`` alone.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from agent.evidence import canonical
from agent.evidence.format import (
    MAGIC,
    MAX_RECORD_BODY,
    REC_CHECKPOINT,
    REC_DATA,
    REC_HEADER,
    REC_MANIFEST,
    RECORD_HEAD_LEN,
    SIGNATURE_LEN,
)

RECORD_HEAD = struct.Struct(">BI")


class SegmentError(Exception):
    """A segment file whose structure is broken (bad magic, truncated record, unknown record)."""


@dataclass(frozen=True, slots=True)
class Record:
    rtype: int
    offset: int
    body: bytes


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A checkpoint as found: what it claims, its signed bytes, and what the file really holds there."""

    claimed: dict[str, Any]
    body: bytes
    signature: bytes
    actual_sha256: str
    actual_offset: int
    actual_chunks: int


@dataclass
class Scan:
    """What one pass over a segment file found. ``manifest_record`` is None when absent."""

    header_body: bytes | None = None
    header: dict[str, Any] | None = None
    manifest_record: bytes | None = None
    manifest_offset: int | None = None
    chunks: int = 0
    chunk_sizes: list[int] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    prefix_sha256: str = ""
    size: int = 0
    truncated_at: int | None = None
    problems: list[str] = field(default_factory=list)


def iter_records(fh: BinaryIO) -> Iterator[Record | SegmentError]:
    """Yield records in file order; a structural fault is yielded (not raised) as the last item."""
    magic = fh.read(len(MAGIC))
    if magic != MAGIC:
        yield SegmentError("not a bodycam evidence file (bad magic)")
        return
    offset = len(MAGIC)
    while True:
        head = fh.read(RECORD_HEAD_LEN)
        if not head:
            return
        if len(head) < RECORD_HEAD_LEN:
            yield SegmentError(f"truncated record head at offset {offset}")
            return
        rtype, length = RECORD_HEAD.unpack(head)
        if rtype not in (REC_HEADER, REC_DATA, REC_CHECKPOINT, REC_MANIFEST):
            yield SegmentError(f"unknown record type 0x{rtype:02x} at offset {offset}")
            return
        if length > MAX_RECORD_BODY:
            yield SegmentError(f"record at offset {offset} claims {length} bytes (limit {MAX_RECORD_BODY})")
            return
        body = fh.read(length)
        if len(body) < length:
            yield SegmentError(f"truncated record at offset {offset}: {len(body)} of {length} bytes")
            return
        yield Record(rtype, offset, body)
        offset += RECORD_HEAD_LEN + length


def scan(
    fh: BinaryIO,
    on_chunk: Callable[[int, bytes], None] | None = None,
    on_header: Callable[[dict[str, Any], bytes], None] | None = None,
) -> Scan:
    """Read a whole file once: structure, running hash up to the manifest, chunk bodies to ``on_chunk``.

    ``on_header`` sees the parsed header before any chunk reaches ``on_chunk``."""
    result = Scan()
    running = hashlib.sha256(MAGIC)
    pos = len(MAGIC)
    for item in iter_records(fh):
        if isinstance(item, SegmentError):
            result.problems.append(str(item))
            result.truncated_at = pos
            break
        if result.manifest_record is not None:
            result.problems.append(f"record after the manifest at offset {item.offset}")
            break
        head = RECORD_HEAD.pack(item.rtype, len(item.body))
        if item.rtype == REC_MANIFEST:
            result.manifest_record = item.body
            result.manifest_offset = item.offset
            result.prefix_sha256 = running.hexdigest()
        elif item.rtype == REC_HEADER:
            if result.header_body is not None or result.chunks:
                result.problems.append(f"misplaced header record at offset {item.offset}")
                break
            result.header_body = item.body
            try:
                header = canonical.loads(item.body)
            except canonical.CanonicalError as exc:
                result.problems.append(f"header is not canonical JSON: {exc}")
                break
            result.header = header if isinstance(header, dict) else None
            if result.header is not None and on_header is not None:
                on_header(result.header, item.body)
        elif item.rtype == REC_DATA:
            if result.header_body is None:
                result.problems.append(f"data chunk before the header at offset {item.offset}")
                break
            if on_chunk is not None:
                on_chunk(result.chunks, item.body)
            result.chunks += 1
            result.chunk_sizes.append(len(item.body))
        elif item.rtype == REC_CHECKPOINT:
            if result.header_body is None:
                result.problems.append(f"checkpoint before the header at offset {item.offset}")
                break
            if len(item.body) <= SIGNATURE_LEN:
                result.problems.append(f"checkpoint at offset {item.offset} too short")
                break
            cbody, sig = item.body[:-SIGNATURE_LEN], item.body[-SIGNATURE_LEN:]
            try:
                parsed = canonical.loads(cbody)
            except canonical.CanonicalError as exc:
                result.problems.append(f"checkpoint at offset {item.offset}: {exc}")
                break
            if not isinstance(parsed, dict):
                result.problems.append(f"checkpoint at offset {item.offset} is not an object")
                break
            result.checkpoints.append(Checkpoint(parsed, cbody, sig, running.hexdigest(), pos, result.chunks))
        if item.rtype != REC_MANIFEST:
            running.update(head)
            running.update(item.body)
        pos = item.offset + RECORD_HEAD_LEN + len(item.body)
    result.size = pos
    if result.manifest_record is None and not result.prefix_sha256:
        result.prefix_sha256 = running.hexdigest()
    return result


# -- salvage after a power loss ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Salvage:
    """What can be kept of an unsealed segment: everything up to its last complete record."""

    keep_bytes: int
    chunks: int
    checkpoints: int
    attested_chunks: int
    attested_mono_ns: int | None
    prefix_sha256: str
    dropped_bytes: int


def plan_salvage(s: Scan, file_size: int) -> Salvage | None:
    """Pure: how much of a scanned partial file to keep; None when it holds no header (nothing to save).

    The last complete record ends the kept prefix; a torn record after it is cut off. The
    chunks covered by the last valid-looking checkpoint were attested while recording.
    """
    if s.header is None or s.manifest_record is not None:
        return None
    last = s.checkpoints[-1] if s.checkpoints else None
    return Salvage(
        keep_bytes=s.size,
        chunks=s.chunks,
        checkpoints=len(s.checkpoints),
        attested_chunks=last.actual_chunks if last else 0,
        attested_mono_ns=int(last.claimed.get("mono_ns", 0)) if last else None,
        prefix_sha256=s.prefix_sha256,
        dropped_bytes=file_size - s.size,
    )
