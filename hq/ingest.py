"""Ingest of a completed upload: verify it as ``bodycam verify`` does, place it in the chain, store
or quarantine it, and sign a receipt.

``decide`` is the pure core (what to do with a checked file, given what headquarters holds);
``Ingestor`` is the shell that reads files, moves them, indexes and audits. It verifies a file
(SHA-256, signatures: the slow part) with no lock held, then decides, stores, indexes and signs
the receipt under one lock per device, so different devices ingest in parallel.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.evidence.format import GENESIS_PREV
from agent.evidence.manifest import ManifestError, parse_manifest_record
from agent.evidence.receipt import MAX_NOTICE_TEXT, make_quarantine_notice, make_receipt
from agent.evidence.tlogproof import encode_inclusion, receipt_leaf
from agent.evidence.verify import check_file
from hq.audit import Auditor
from hq.index import Index
from hq.records import BACKGROUND_PREFIX, Evidence, Quarantined, Upload
from hq.storage import EvidenceStore, UploadStore, file_sha256
from hq.tlog import Leaf, TransparencyLog
from hq.tus import MAX_SEQ

log = logging.getLogger(__name__)

Action = Literal["store", "duplicate", "quarantine"]
DeviceLock = Callable[[str], AbstractContextManager[None]]
# The custody ledger's writer (LifecycleService.custody): event, actor, target, detail.
CustodyLog = Callable[..., None]
Verifier = Callable[[Path, ed25519.Ed25519PublicKey], "Checked"]


class IngestError(Exception):
    """An upload cannot be ingested now (its staged bytes are gone); the message says which."""


class LocalDeviceLocks:
    """One lock per device id, in this process: ``hold(device_id)`` serialises the chain-position
    decisions of one device and lets other devices go on. Locks are dropped when nobody holds or
    waits for them, so the table stays as small as the number of devices ingesting right now.

    Across nodes this is not enough: the index's ``device_lock`` (an advisory lock) is held
    inside it (:func:`device_lock_for`).
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextlib.contextmanager
    def hold(self, device_id: str) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.get(device_id, (threading.Lock(), 0))
            self._locks[device_id] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._locks[device_id]
                if users == 1:
                    del self._locks[device_id]
                else:
                    self._locks[device_id] = (lock, users - 1)

    def users(self, device_id: str) -> int:
        """Threads holding or waiting for ``device_id``'s lock now (for status and tests)."""
        with self._guard:
            return self._locks.get(device_id, (None, 0))[1]


def device_lock_for(index: Index, local: LocalDeviceLocks) -> DeviceLock:
    """The per-device lock of ingest: the in-process lock (threads of this node queue here, not
    in the database), then the index's ``device_lock(device_id)``, which serialises one device's
    decisions across nodes (a PostgreSQL advisory lock; a file lock over SQLite)."""

    @contextlib.contextmanager
    def both(device_id: str) -> Iterator[None]:
        with local.hold(device_id), index.device_lock(device_id):
            yield

    return both


@dataclass(frozen=True, slots=True)
class Held:
    """What headquarters holds at one seq of a device: the entry's hash and its prev."""

    hash: str
    prev: str


@dataclass(frozen=True, slots=True)
class Checked:
    """What verification of one file found. ``device_id``/``seq`` are the manifest's claims (read
    even when the signature failed, to name the file); ``verified`` is true only if it passed."""

    verified: bool
    problems: tuple[str, ...]
    device_id: str | None = None
    seq: int | None = None
    kind: str = ""
    hash: str = ""
    prev: str = ""
    utc_start_ns: int = 0
    utc_end_ns: int = 0
    warnings: tuple[str, ...] = field(default=())
    manifest: str = ""  # the verified manifest's canonical JSON
    recording_id: str | None = None
    marks: int = 0


def recording_of(manifest: dict[str, Any]) -> str | None:
    """The recording an entry belongs to: a segment's ``recording_id``, an event's detail's; a copy
    from the unit's background ring (flag ``background``) belongs to the range headquarters asked
    for, ``background-<request id>``, so the copies of one request are found and played as one."""
    origin = manifest.get("background")
    request_id = origin.get("request_id") if isinstance(origin, dict) else None
    if manifest.get("type") == "segment" and "background" in (manifest.get("flags") or ()) \
            and isinstance(request_id, str) and request_id:
        return BACKGROUND_PREFIX + request_id
    where = manifest if manifest.get("type") == "segment" else manifest.get("detail")
    value = where.get("recording_id") if isinstance(where, dict) else None
    return value if isinstance(value, str) and value else None


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    code: str
    reason: str


def decide(upload_device: str, announced_seq: int, checked: Checked, held: Callable[[int], Held | None]) -> Decision:
    """Where a checked entry goes: stored, an idempotent duplicate, or quarantine (with why)."""
    if checked.device_id is not None and checked.device_id != upload_device:
        return Decision(
            "quarantine", "other-device", f"entry of device {checked.device_id!r}, sent by {upload_device!r}"
        )
    if not checked.verified:
        return Decision("quarantine", "verification-failed", "; ".join(checked.problems) or "not verifiable")
    assert checked.seq is not None
    seq = checked.seq
    if seq != announced_seq:
        return Decision("quarantine", "seq-mismatch", f"announced as seq {announced_seq}, the manifest says {seq}")
    same = held(seq)
    if same is not None:
        if same.hash == checked.hash:
            return Decision("duplicate", "duplicate", f"seq {seq} is already held with the same manifest hash")
        return Decision(
            "quarantine", "conflict", f"headquarters holds a different entry at seq {seq} (forged, replayed or forked)"
        )
    if seq == 0 and checked.prev != GENESIS_PREV:
        return Decision("quarantine", "prev-mismatch", "seq 0 does not start from genesis")
    before = held(seq - 1) if seq > 0 else None
    if before is not None and checked.prev != before.hash:
        return Decision("quarantine", "prev-mismatch", f"prev does not match the hash of the held seq {seq - 1}")
    after = held(seq + 1)
    if after is not None and after.prev != checked.hash:
        return Decision("quarantine", "next-mismatch", f"the held seq {seq + 1} does not link to this entry")
    return Decision("store", "stored", "verified and stored")


def _claimed_seq(checked: Checked, upload: Upload) -> int:
    """The seq a quarantined file names: its manifest's claim when that is a sane number (an
    unverified manifest may claim anything, and the index keeps 64-bit integers), else the
    announced one."""
    claimed = checked.seq
    return claimed if claimed is not None and 0 <= claimed <= MAX_SEQ else upload.seq


def check_upload(path: Path, device_pub: ed25519.Ed25519PublicKey) -> Checked:
    """Run ``check_file`` on a completed upload; keep the manifest's claims even when it fails."""
    result, structure = check_file(path, device_pub)
    # The staged file is named after its upload, not its seq: that warning says nothing.
    warnings = tuple(w for w in result.warnings if "file name does not match" not in w)
    if result.signed is not None and not result.problems:
        m = result.signed.manifest
        return Checked(
            verified=True,
            problems=(),
            device_id=str(m["device_id"]),
            seq=result.signed.seq,
            kind=str(m["type"]),
            hash=result.signed.hash,
            prev=str(m["prev"]),
            utc_start_ns=int(m["time"]["utc_start_ns"]),
            utc_end_ns=int(m["time"]["utc_end_ns"]),
            warnings=warnings,
            manifest=result.signed.body.decode(),
            recording_id=recording_of(m),
            marks=len(m.get("marks") or ()) if m["type"] == "segment" else int(m.get("event") == "mark"),
        )
    claimed_device: str | None = None
    claimed_seq: int | None = None
    if structure is not None and structure.manifest_record is not None:
        try:
            unverified = parse_manifest_record(structure.manifest_record)
            claimed_device, claimed_seq = str(unverified.manifest["device_id"]), unverified.seq
        except ManifestError:
            pass
    return Checked(verified=False, problems=tuple(result.problems), device_id=claimed_device, seq=claimed_seq)


@dataclass(frozen=True, slots=True)
class Verified:
    """What the checks outside the device lock found: the file's SHA-256, what ``check_file``
    found, and a quarantine decided before any chain position is looked at."""

    digest: str
    checked: Checked
    early: Decision | None


@dataclass(frozen=True, slots=True)
class Outcome:
    """The answer to a completed upload: a receipt (stored or duplicate), or why it was quarantined
    with the signed notice that says so (docs/sync-protocol.md, "Quarantine notices")."""

    action: Action
    code: str
    message: str
    receipt: bytes | None = None
    notice: bytes | None = None
    inclusion: bytes | None = None  # the receipt's inclusion proof in the transparency log


class Ingestor:
    """Turns completed uploads into stored evidence or quarantined files.

    Thread contract: any number of threads may call ``ingest``. Verification runs with no lock
    held; deciding, storing, indexing and signing the receipt run under ``device_lock`` of the
    upload's device, so chain-position decisions for one device are made against a consistent
    view of what is held, and different devices do not wait for each other.
    """

    def __init__(
        self,
        index: Index,
        store: EvidenceStore,
        uploads: UploadStore,
        receipt_key: ed25519.Ed25519PrivateKey,
        audit: Auditor,
        now_ns: Callable[[], int],
        device_lock: DeviceLock | None = None,
        verify: Verifier = check_upload,
        tlog: TransparencyLog | None = None,
        custody: CustodyLog | None = None,
    ) -> None:
        self._index = index
        self._custody = custody
        self._store = store
        self._uploads = uploads
        self._receipt_key = receipt_key
        self._audit = audit
        self._now_ns = now_ns
        self._device_lock = device_lock or LocalDeviceLocks().hold
        self._verify = verify
        self.tlog = tlog

    def ingest(self, upload: Upload) -> Outcome:
        """Verify ``upload`` (no lock held), then place it under its device's lock. Raises
        :class:`IngestError` when its staged bytes are gone and it is not held either (a node
        stopped between storing and recording, then lost the rest): the unit must send it again.
        Stored, quarantined or a duplicate, the upload's bytes are then removed; an ingest that
        raised keeps them, so the unit's retry runs it again."""
        with self._uploads.completed(upload.upload_id) as path:
            if path is None:
                with self._device_lock(upload.device_id):
                    return self._after_crash(upload)
            verified = self.verify(upload, path)
            with self._device_lock(upload.device_id):
                outcome = self._place(upload, path, verified)
        self._uploads.remove(upload.upload_id)
        return outcome

    def verify(self, upload: Upload, path: Path) -> Verified:
        """The slow checks of one file: its SHA-256 against the announced one, the device's
        enrolment, and ``check_file`` (signature, ciphertext hash, structure)."""
        digest = file_sha256(path)
        device = self._index.device(upload.device_id)
        if digest != upload.sha256:
            early = Decision("quarantine", "sha256-mismatch", "the file's SHA-256 differs from the announced one")
        elif device is None or not device.active:
            early = Decision("quarantine", "not-enrolled", f"{upload.device_id} is not an enrolled, active device")
        else:
            pub = serialization.load_pem_public_key(device.public_pem.encode("ascii"))
            assert isinstance(pub, ed25519.Ed25519PublicKey)
            return Verified(digest, self._verify(path, pub), None)
        return Verified(digest, Checked(verified=False, problems=(early.reason,)), early)

    def _after_crash(self, upload: Upload) -> Outcome:
        held = self._index.evidence(upload.device_id, upload.seq)
        if held is None or held.file_sha256 != upload.sha256:
            raise IngestError(f"the bytes of upload {upload.upload_id} are gone and {upload.device_id} "
                              f"seq {upload.seq} is not held")
        receipt = self.issue_receipt(upload.device_id, upload.seq)
        return Outcome("duplicate", "duplicate", "stored before the node stopped", receipt,
                       inclusion=self.log_receipt(upload.device_id, upload.seq, receipt))

    def _place(self, upload: Upload, path: Path, verified: Verified) -> Outcome:
        """Decide, store or quarantine, index, audit and sign; the caller holds the device lock."""
        digest, checked = verified.digest, verified.checked
        decision = verified.early or decide(upload.device_id, upload.seq, checked, self._held(upload.device_id))
        target = f"{upload.device_id}/{_claimed_seq(checked, upload)}"
        detail = {
            "upload_id": upload.upload_id,
            "code": decision.code,
            "reason": decision.reason,
            "file_sha256": digest,
        }
        if decision.action == "quarantine":
            now = self._now_ns()
            self._quarantine(upload, path, digest, checked, decision, now)
            self._audit.record("ingest", upload.device_id, target, "quarantined", **detail)
            notice = self.sign_notice(upload, decision.code, decision.reason, digest, now)
            return Outcome("quarantine", decision.code, decision.reason, notice=notice)
        seq = checked.seq
        assert seq is not None
        if decision.action == "store":
            location = self._store.put(upload.device_id, seq, path)
            self._index.add_evidence(
                Evidence(
                    device_id=upload.device_id,
                    seq=seq,
                    kind=checked.kind,
                    manifest_sha256=checked.hash,
                    prev=checked.prev,
                    file_sha256=digest,
                    size_bytes=upload.length,
                    utc_start_ns=checked.utc_start_ns,
                    utc_end_ns=checked.utc_end_ns,
                    received_utc_ns=self._now_ns(),
                    status="verified",
                    location=location,
                    upload_id=upload.upload_id,
                    warnings=checked.warnings,
                    recording_id=checked.recording_id,
                    marks=checked.marks,
                    manifest=checked.manifest or None,
                )
            )
            if self._custody is not None:
                recording = checked.recording_id or f"entry-{seq}"
                self._custody("ingest", upload.device_id, f"{upload.device_id}/{recording}", seq=seq,
                              manifest_sha256=checked.hash, file_sha256=digest, size_bytes=upload.length,
                              location=location, upload_id=upload.upload_id)
        receipt = self.issue_receipt(upload.device_id, seq)
        outcome = "ok" if decision.action == "store" else "duplicate"
        self._audit.record("ingest", upload.device_id, target, outcome, manifest_sha256=checked.hash, **detail)
        return Outcome(decision.action, decision.code, decision.reason, receipt,
                       inclusion=self.log_receipt(upload.device_id, seq, receipt))

    def log_receipt(self, device_id: str, seq: int, receipt: bytes) -> bytes | None:
        """Append ``receipt`` to the transparency log (when there is one); its inclusion proof
        against the checkpoint signed by that append (docs/transparency-log.md)."""
        if self.tlog is None:
            return None
        done = self.tlog.append([Leaf("receipt", device_id, seq, receipt_leaf(receipt))], self._now_ns())
        proof = self.tlog.inclusion(done.first_index, done.size)
        return encode_inclusion(done.first_index, done.size, proof, done.checkpoint)

    def _held(self, device_id: str) -> Callable[[int], Held | None]:
        def held(seq: int) -> Held | None:
            e = self._index.evidence(device_id, seq) if seq >= 0 else None
            return None if e is None else Held(e.manifest_sha256, e.prev)

        return held

    def _quarantine(
        self, upload: Upload, path: Path, digest: str, checked: Checked, decision: Decision, now: int
    ) -> None:
        reason = {
            "code": decision.code,
            "reason": decision.reason,
            "problems": list(checked.problems),
            "upload_id": upload.upload_id,
            "device_id": upload.device_id,
            "announced_seq": upload.seq,
            "claimed_seq": checked.seq,
            "file_sha256": digest,
            "received_utc_ns": now,
        }
        location = self._store.quarantine(upload.device_id, upload.upload_id, path, reason)
        self._index.add_quarantine(
            Quarantined(
                quarantine_id=upload.upload_id,
                device_id=upload.device_id,
                seq=_claimed_seq(checked, upload),
                upload_id=upload.upload_id,
                file_sha256=digest,
                code=decision.code,
                reason=decision.reason,
                location=location,
                received_utc_ns=now,
            )
        )
        log.warning("quarantined upload %s of %s: %s", upload.upload_id, upload.device_id, decision.reason)

    def sign_notice(self, upload: Upload, code: str, reason: str, received_sha256: str, when_ns: int) -> bytes:
        """Sign the quarantine notice of ``upload``: the unit quarantines its entry only on this."""
        return make_quarantine_notice(
            {
                "device_id": upload.device_id,
                "seq": upload.seq,
                "file_sha256": upload.sha256,
                "received_sha256": received_sha256,
                "upload_id": upload.upload_id,
                "code": code[:MAX_NOTICE_TEXT] or "quarantined",
                "reason": reason[:MAX_NOTICE_TEXT] or "quarantined",
                "quarantined_utc_ns": when_ns,
            },
            self._receipt_key,
        )

    def notice_for(self, upload: Upload) -> bytes | None:
        """The notice of an upload quarantined before notices were kept with its answer, signed
        again from the quarantine record; None if there is none."""
        held = next((q for q in self._index.quarantined(upload.device_id) if q.upload_id == upload.upload_id), None)
        if held is None:
            return None
        return self.sign_notice(upload, held.code, held.reason, held.file_sha256, held.received_utc_ns)

    def issue_receipt(self, device_id: str, seq: int) -> bytes:
        """Sign a receipt for a held entry with the current chain head and contiguous run."""
        entry = self._index.evidence(device_id, seq)
        device = self._index.device(device_id)
        head = self._index.chain_head(device_id)
        if entry is None or device is None or head is None:
            raise LookupError(f"{device_id} seq {seq} is not held")
        receipt = make_receipt(
            {
                "device_id": device_id,
                "seq": seq,
                "manifest_sha256": entry.manifest_sha256,
                "file_sha256": entry.file_sha256,
                "received_utc_ns": entry.received_utc_ns,
                "chain_head": {"seq": head[0], "hash": head[1]},
                "contiguous_through": device.contiguous_through,
            },
            self._receipt_key,
        )
        self._index.set_receipt(device_id, seq, receipt)
        if self._custody is not None:
            self._custody("receipt", "hq-ingest", f"{device_id}/{entry.recording_id or f'entry-{seq}'}", seq=seq,
                          receipt_sha256=hashlib.sha256(receipt).hexdigest(), chain_head_seq=head[0],
                          contiguous_through=device.contiguous_through)
        return receipt
