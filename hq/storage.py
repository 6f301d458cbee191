"""Where headquarters keeps bytes: stored evidence, quarantined files and uploads in progress.

``EvidenceStore`` is the interface the service uses for evidence; ``FileEvidenceStore`` keeps it
on the local file system, ``hq.s3store.S3EvidenceStore`` in an S3 bucket under Object Lock.
``UploadStore`` holds uploads in progress: ``UploadArea`` as local files whose size is the tus
offset (an upload resumes after the service restarts), ``hq.s3uploads.S3UploadStore`` as chunk
objects in a staging bucket (an upload resumes through any node). Either hands ingest the
completed bytes as a local file (``completed``), which ingest verifies and then puts in the store.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from agent.evidence.format import segment_filename
from agent.fsutil import file_sha256
from hq.lifecycle import Protection
from hq.records import UPLOAD_ID, valid_device_id

DIR_MODE = 0o700
__all__ = ["EvidenceStore", "FileEvidenceStore", "StorageError", "UploadArea", "UploadStore", "file_sha256"]
_RECORD_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
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

    # the evidence lifecycle (hq/lifecycle_worker.py): legal holds, the store's own lock, deletion

    def protection(self, device_id: str, seq: int, location: str | None = None) -> Protection:
        """What the store itself keeps on the stored entry: its legal hold and lock."""
        ...

    def set_hold(self, device_id: str, seq: int, on: bool, location: str | None = None) -> None:
        """Set (``on``) or release the stored entry's legal hold; while set, ``delete`` is refused."""
        ...

    def delete(self, device_id: str, seq: int, location: str | None = None) -> None:
        """Remove the stored entry's bytes for good. The store refuses (StorageError) while a legal
        hold or its lock stands; an entry already gone is not an error."""
        ...

    def put_record(self, name: str, data: bytes) -> str:
        """Keep ``data`` as ``records/<name>`` under the store's lock (the custody ledger's anchors),
        never overwriting; return where it lives."""
        ...

    def get_record(self, name: str) -> bytes | None:
        """The bytes of ``records/<name>``, or None."""
        ...

    def list_records(self, prefix: str) -> list[str]:
        """Names of the records under ``records/<prefix>``, sorted."""
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

    The embedded equivalent of S3's legal hold is a marker file ``<seq>.bcs.hold`` beside the
    entry: ``delete`` refuses while it is there. Files have no lock date (the embedded store has
    no WORM layer; the index's own hold triggers still apply). Records (``put_record``) are
    ``root/records/<name>``, created exclusively and made read-only.
    """

    def __init__(self, root: Path) -> None:
        self.evidence_root = root / "evidence"
        self.quarantine_root = root / "quarantine"
        self.records_root = root / "records"
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

    def _hold_marker(self, device_id: str, seq: int) -> Path:
        path = self.path(device_id, seq)
        return path.with_name(path.name + ".hold")

    def protection(self, device_id: str, seq: int, location: str | None = None) -> Protection:
        return Protection(legal_hold=self._hold_marker(device_id, seq).exists(), retain_until_ns=None)

    def set_hold(self, device_id: str, seq: int, on: bool, location: str | None = None) -> None:
        marker = self._hold_marker(device_id, seq)
        try:
            if on:
                _mkdir(marker.parent)
                with contextlib.suppress(FileExistsError):
                    os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
            else:
                marker.unlink(missing_ok=True)
            _fsync_dir(marker.parent)
        except OSError as exc:
            raise StorageError(f"{'setting' if on else 'releasing'} the legal hold of {device_id} seq {seq}: "
                               f"{exc.strerror}") from exc

    def delete(self, device_id: str, seq: int, location: str | None = None) -> None:
        path = self.path(device_id, seq)
        if self._hold_marker(device_id, seq).exists():
            raise StorageError(f"deleting {device_id} seq {seq}: refused, it is on legal hold")
        try:
            path.unlink(missing_ok=True)
            _fsync_dir(path.parent)
        except OSError as exc:
            raise StorageError(f"deleting {device_id} seq {seq}: {exc.strerror}") from exc

    def _record_path(self, name: str) -> Path:
        if not all(_RECORD_PART.match(part) for part in name.split("/")):
            raise StorageError(f"record name {name!r}: use letters, digits, '.', '-', '_' and '/' between parts")
        return self.records_root / name

    def put_record(self, name: str, data: bytes) -> str:
        path = self._record_path(name)
        try:
            _mkdir(path.parent)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            _fsync_dir(path.parent)
        except OSError as exc:
            raise StorageError(f"keeping record {name}: {exc.strerror}") from exc
        return str(path)

    def get_record(self, name: str) -> bytes | None:
        try:
            return self._record_path(name).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"reading record {name}: {exc.strerror}") from exc

    def list_records(self, prefix: str) -> list[str]:
        folder = self._record_path(prefix.rstrip("/")) if prefix.strip("/") else self.records_root
        if not folder.is_dir():
            return []
        return sorted(str(p.relative_to(self.records_root)) for p in folder.rglob("*") if p.is_file())

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
