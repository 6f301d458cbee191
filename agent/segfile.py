"""A segment's partial file while it is written: where its bytes go, and the writer sealing into it."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from agent.evidence.segment import SegmentWriter


class SegmentFile(Protocol):
    """Where a segment's bytes go: a file that can be made durable. Tests put a faulty one here."""

    def write(self, data: bytes, /) -> int: ...

    def flush(self) -> None: ...

    def sync(self) -> None: ...

    def close(self) -> None: ...


class OsSegmentFile:
    """A real file, buffered in user space between checkpoints; ``sync`` flushes and fsyncs."""

    def __init__(self, path: Path) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._fh: BinaryIO = os.fdopen(fd, "wb", buffering=256 * 1024)

    def write(self, data: bytes, /) -> int:
        return self._fh.write(data)

    def flush(self) -> None:
        self._fh.flush()

    def sync(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()


FileOpener = Callable[[Path], SegmentFile]


@dataclass
class OpenSegment:
    """A segment being written: its partial file and the writer sealing into it."""

    segment_id: str
    path: Path
    fh: SegmentFile
    writer: SegmentWriter
    mono_start_ns: int
    utc_start_ns: int
    last_checkpoint_ns: int
    meta: dict[str, Any] = field(default_factory=dict)

    def write(self, data: bytes) -> int:
        return self.writer.write(data)

    def flush(self) -> None:  # the muxer flushes its sink; durability is the checkpoint's job
        pass

    def seekable(self) -> bool:
        return False
