"""Where headquarters keeps bytes: stored evidence, quarantined files and uploads in progress.

``EvidenceStore`` is the interface the service uses for evidence; ``FileEvidenceStore`` keeps it
on the local file system, ``hq.s3store.S3EvidenceStore`` in an S3 bucket under Object Lock.
``UploadStore`` holds uploads in progress: ``UploadArea`` as local files whose size is the tus
offset (an upload resumes after the service restarts), ``hq.s3uploads.S3UploadStore`` as chunk
objects in a staging bucket (an upload resumes through any node). Either hands ingest the
completed bytes as a local file (``completed``), which ingest verifies and then puts in the store.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from agent.evidence.format import segment_filename
from hq.records import UPLOAD_ID, valid_device_id

DIR_MODE = 0o700
FILE_MODE = 0o600


class StorageError(Exception):
    """A storage operation failed or was refused; the message says what was being done."""


class EvidenceStore(Protocol):
    def put(self, device_id: str, seq: int, source: Path) -> str:
        """Move ``source`` in as the evidence of (device, seq); return where it now lives.

        Never overwrites: raises StorageError if that entry is already stored.
        """
        ...

    def get(self, device_id: str, seq: int, location: str | None = None) -> BinaryIO:
        """Open the stored bytes for reading (the caller closes the stream).

        ``location`` is what ``put`` returned (the index's ``evidence.location``): a store that
        keeps versions reads exactly that version; without it, the entry's current bytes.
        """
        ...

    def exists(self, device_id: str, seq: int) -> bool: ...

    def quarantine(self, device_id: str, name: str, source: Path, reason: Mapping[str, Any]) -> str:
        """Move ``source`` aside with a JSON note of ``reason``; return where it now lives."""
        ...


class UploadStore(Protocol):
    """Uploads in progress, as the tus service uses them. The service serialises calls per upload
    within a node; a store shared by nodes refuses an append that does not start at its end."""

    def create(self, upload_id: str) -> None: ...

    def size(self, upload_id: str) -> int:
        """Bytes received so far (the tus offset); an upload never created is empty."""
        ...

    def append(self, upload_id: str, offset: int, data: bytes) -> int:
        """Store ``data`` at ``offset``, which must be the current size; return the new size."""
        ...

    def remove(self, upload_id: str) -> None:
        """Forget the upload's bytes (after ingest, or when the unit terminates it)."""
        ...

    def completed(self, upload_id: str) -> AbstractContextManager[Path | None]:
        """The received bytes as a local file, for verification and then ``EvidenceStore.put``
        (which may move it away); None when they are gone (removed after an ingest whose outcome
        was not recorded). A temporary copy is removed on exit; the upload itself stays until
        ``remove``, so an ingest that failed can run again."""
        ...


def file_sha256(path: Path) -> str:
    """SHA-256 hex of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1024 * 1024):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _mkdir(path: Path) -> None:
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)


def _check_device(device_id: str) -> None:
    if not valid_device_id(device_id):
        raise StorageError(f"device id {device_id!r} cannot name a folder")


class FileEvidenceStore:
    """Evidence under ``root/evidence/<device>/<seq>.bcs``, quarantine under ``root/quarantine/<device>/``.

    Files are moved in with a hard link (which fails rather than overwrite) and the directory is
    fsynced. Thread-safe: no state beyond the file system, and no two calls write the same name.
    """

    def __init__(self, root: Path) -> None:
        self.evidence_root = root / "evidence"
        self.quarantine_root = root / "quarantine"
        for d in (self.evidence_root, self.quarantine_root):
            _mkdir(d)

    def path(self, device_id: str, seq: int) -> Path:
        _check_device(device_id)
        if seq < 0:
            raise StorageError(f"seq {seq} is negative")
        return self.evidence_root / device_id / segment_filename(seq)

    def put(self, device_id: str, seq: int, source: Path) -> str:
        dest = self.path(device_id, seq)
        _mkdir(dest.parent)
        try:
            os.chmod(source, FILE_MODE)
            os.link(source, dest)
        except FileExistsError:
            # A crash between linking and indexing leaves the same bytes behind: finish the move.
            if file_sha256(dest) != file_sha256(source):
                raise StorageError(f"storing {device_id} seq {seq}: {dest} already exists") from None
        except OSError as exc:
            raise StorageError(f"storing {device_id} seq {seq} at {dest}: {exc.strerror}") from exc
        _fsync_dir(dest.parent)
        source.unlink()
        return str(dest)

    def get(self, device_id: str, seq: int, location: str | None = None) -> BinaryIO:
        try:
            return self.path(device_id, seq).open("rb")
        except OSError as exc:
            raise StorageError(f"reading {device_id} seq {seq}: {exc.strerror}") from exc

    def exists(self, device_id: str, seq: int) -> bool:
        return self.path(device_id, seq).is_file()

    def quarantine(self, device_id: str, name: str, source: Path, reason: Mapping[str, Any]) -> str:
        _check_device(device_id)
        folder = self.quarantine_root / device_id
        _mkdir(folder)
        dest = folder / f"{name}.bcs"
        note = folder / f"{name}.json"
        try:
            fd = os.open(note, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
            with os.fdopen(fd, "w") as fh:
                json.dump(dict(reason), fh, indent=2, sort_keys=True)
                fh.write("\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(source, dest)
        except OSError as exc:
            raise StorageError(f"quarantining {source} as {dest}: {exc.strerror}") from exc
        _fsync_dir(folder)
        return str(dest)


class UploadArea:
    """Uploads in progress: ``root/uploads/<id>.part``, whose size is the tus offset.

    Not thread-safe per upload: the service holds a per-upload lock around ``append``.
    """

    def __init__(self, root: Path) -> None:
        self.root = root / "uploads"
        _mkdir(self.root)

    def path(self, upload_id: str) -> Path:
        if not UPLOAD_ID.match(upload_id):
            raise StorageError(f"upload id {upload_id!r} is malformed")
        return self.root / f"{upload_id}.part"

    def create(self, upload_id: str) -> None:
        try:
            os.close(os.open(self.path(upload_id), os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
        except OSError as exc:
            raise StorageError(f"creating upload {upload_id}: {exc.strerror}") from exc
        _fsync_dir(self.root)

    def size(self, upload_id: str) -> int:
        """Bytes received so far; a missing file (created in the index, then a crash) is empty."""
        try:
            return self.path(upload_id).stat().st_size
        except FileNotFoundError:
            self.create(upload_id)
            return 0

    def append(self, upload_id: str, offset: int, data: bytes) -> int:
        """Write ``data`` at ``offset`` (which must be the current size), fsync; return the new size."""
        path = self.path(upload_id)
        try:
            fd = os.open(path, os.O_WRONLY)
        except OSError as exc:
            raise StorageError(f"opening upload {upload_id}: {exc.strerror}") from exc
        try:
            if os.fstat(fd).st_size != offset:
                raise StorageError(f"upload {upload_id}: offset {offset} is not the end of the file")
            os.lseek(fd, offset, os.SEEK_SET)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
            return offset + len(data)
        except OSError as exc:
            raise StorageError(f"writing upload {upload_id}: {exc.strerror}") from exc
        finally:
            os.close(fd)

    def remove(self, upload_id: str) -> None:
        self.path(upload_id).unlink(missing_ok=True)

    @contextmanager
    def completed(self, upload_id: str) -> Iterator[Path | None]:
        """The upload's own file: no copy (``FileEvidenceStore.put`` moves it in with a link)."""
        path = self.path(upload_id)
        yield path if path.exists() else None
