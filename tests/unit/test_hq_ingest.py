"""Ingest decisions: the pure chain-position rules, then the ingestor on real evidence files."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.evidence.format import GENESIS_PREV, segment_filename
from agent.evidence.keys import fingerprint, public_der, public_pem
from agent.evidence.receipt import verify_receipt
from hq.audit import Auditor
from hq.index import SqliteIndex
from hq.ingest import Checked, Held, Ingestor, Outcome, decide, recording_of
from hq.records import Upload
from hq.storage import FileEvidenceStore, UploadArea
from tests.evidence_util import ChainBuilder, MemorySigner

T0_NS = 1_790_000_000_000_000_000
H = [f"{i:064x}" for i in range(1, 10)]
NOTHING: dict[int, Held] = {}


def checked(seq: int, hash_: str, prev: str, device: str = "unit-1") -> Checked:
    return Checked(verified=True, problems=(), device_id=device, seq=seq, kind="segment", hash=hash_, prev=prev)


# -- decide: pure ---------------------------------------------------------------------------


def test_first_entry_from_genesis_is_stored() -> None:
    assert decide("unit-1", 0, checked(0, H[0], GENESIS_PREV), NOTHING.get).action == "store"


def test_seq_zero_must_start_from_genesis() -> None:
    assert decide("unit-1", 0, checked(0, H[0], H[5]), NOTHING.get).code == "prev-mismatch"


def test_same_seq_same_hash_is_a_duplicate() -> None:
    d = decide("unit-1", 4, checked(4, H[4], H[3]), {4: Held(H[4], H[3])}.get)
    assert (d.action, d.code) == ("duplicate", "duplicate")


def test_same_seq_other_hash_is_a_conflict() -> None:
    d = decide("unit-1", 4, checked(4, H[6], H[3]), {4: Held(H[4], H[3])}.get)
    assert (d.action, d.code) == ("quarantine", "conflict")


def test_prev_must_match_the_held_predecessor() -> None:
    chain = {3: Held(H[3], H[2])}
    assert decide("unit-1", 4, checked(4, H[4], H[3]), chain.get).action == "store"
    d = decide("unit-1", 4, checked(4, H[4], H[7]), chain.get)
    assert (d.action, d.code) == ("quarantine", "prev-mismatch")


def test_the_held_successor_must_link_to_it() -> None:
    # Entries arrive in any order: seq 5 first, then 4 must be the one 5 links to.
    chain = {5: Held(H[5], H[4])}
    assert decide("unit-1", 4, checked(4, H[4], H[3]), chain.get).action == "store"
    assert decide("unit-1", 4, checked(4, H[8], H[3]), chain.get).code == "next-mismatch"


def test_a_gap_is_not_a_refusal() -> None:
    assert decide("unit-1", 9, checked(9, H[8], H[7]), {2: Held(H[2], H[1])}.get).action == "store"


def test_other_device_and_seq_mismatch_and_failed_checks_are_quarantined() -> None:
    assert decide("unit-1", 4, checked(4, H[4], H[3], device="unit-2"), NOTHING.get).code == "other-device"
    assert decide("unit-1", 5, checked(4, H[4], H[3]), NOTHING.get).code == "seq-mismatch"
    failed = Checked(verified=False, problems=("ciphertext SHA-256 differs",), device_id="unit-1", seq=4)
    d = decide("unit-1", 4, failed, NOTHING.get)
    assert (d.action, d.code, d.reason) == ("quarantine", "verification-failed", "ciphertext SHA-256 differs")
    # A file signed by another key whose manifest names another device: named for what it is.
    forged = Checked(verified=False, problems=("signature",), device_id="unit-2", seq=4)
    assert decide("unit-1", 4, forged, NOTHING.get).code == "other-device"


# -- the ingestor on real files -------------------------------------------------------------


@dataclass
class Env:
    root: Path
    index: SqliteIndex
    uploads: UploadArea
    ingestor: Ingestor
    key: ed25519.Ed25519PrivateKey
    counter: int = 0

    def ingest(self, device_id: str, seq: int, path: Path) -> Outcome:
        self.counter += 1
        uid = f"{self.counter:032x}"
        data = path.read_bytes()
        upload = Upload(uid, device_id, seq, path.name, hashlib.sha256(data).hexdigest(), len(data), "receiving", 0, 0)
        self.index.add_upload(upload)
        shutil.copyfile(path, self.uploads.path(uid))
        return self.ingestor.ingest(upload)


def enroll(index: SqliteIndex, signer: MemorySigner, device_id: str) -> None:
    pub = signer.public_key()
    index.enroll(device_id, public_pem(pub).decode(), fingerprint(public_der(pub)), T0_NS)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    root = tmp_path / "H"
    root.mkdir()
    index = SqliteIndex(root / "index.sqlite")
    uploads = UploadArea(root)
    key = ed25519.Ed25519PrivateKey.generate()
    ingestor = Ingestor(
        index, FileEvidenceStore(root), uploads, key, Auditor(index, "hq-ingest", lambda: T0_NS), lambda: T0_NS
    )
    yield Env(root, index, uploads, ingestor, key)
    index.close()


def test_store_then_duplicate_is_idempotent(env: Env, tmp_path: Path) -> None:
    unit = ChainBuilder(tmp_path / "u1", device_id="unit-1")
    enroll(env.index, unit.signer, "unit-1")
    path = unit.event("boot")
    first = env.ingest("unit-1", 0, path)
    assert first.action == "store" and first.receipt is not None
    second = env.ingest("unit-1", 0, path)
    assert second.action == "duplicate" and second.receipt is not None
    assert (
        verify_receipt(second.receipt, env.key.public_key())["manifest_sha256"]
        == (verify_receipt(first.receipt, env.key.public_key())["manifest_sha256"])
    )
    assert (env.root / "evidence" / "unit-1" / segment_filename(0)).read_bytes() == path.read_bytes()
    assert not list(env.uploads.root.iterdir())
    assert [a.outcome for a in env.index.audit_log("ingest")] == ["ok", "duplicate"]


def test_a_forked_entry_at_a_held_seq_is_a_quarantined_conflict(env: Env, tmp_path: Path) -> None:
    unit = ChainBuilder(tmp_path / "u1", device_id="unit-1")
    enroll(env.index, unit.signer, "unit-1")
    env.ingest("unit-1", 0, unit.event("boot"))
    fork = ChainBuilder(tmp_path / "fork", signer=unit.signer, device_id="unit-1")
    out = env.ingest("unit-1", 0, fork.event("boot"))
    assert (out.action, out.code) == ("quarantine", "conflict")
    [q] = env.index.quarantined("unit-1")
    assert q.code == "conflict" and Path(q.location).is_file()


def test_prev_mismatch_with_the_held_predecessor_is_quarantined(env: Env, tmp_path: Path) -> None:
    unit = ChainBuilder(tmp_path / "u1", device_id="unit-1")
    enroll(env.index, unit.signer, "unit-1")
    env.ingest("unit-1", 0, unit.event("boot"))
    stray = ChainBuilder(tmp_path / "stray", signer=unit.signer, device_id="unit-1", seq=1, prev="ee" * 32)
    out = env.ingest("unit-1", 1, stray.event("record-start"))
    assert (out.action, out.code) == ("quarantine", "prev-mismatch")
    assert env.index.evidence("unit-1", 1) is None


def test_another_devices_segment_is_quarantined(env: Env, tmp_path: Path) -> None:
    mine = ChainBuilder(tmp_path / "u1", device_id="unit-1")
    theirs = ChainBuilder(tmp_path / "u2", device_id="unit-2")
    enroll(env.index, mine.signer, "unit-1")
    enroll(env.index, theirs.signer, "unit-2")
    out = env.ingest("unit-1", 0, theirs.event("boot"))
    assert (out.action, out.code) == ("quarantine", "other-device")
    # Even signed with this unit's key, an entry naming another device is not this unit's.
    forged = ChainBuilder(tmp_path / "u3", signer=mine.signer, device_id="unit-2")
    assert env.ingest("unit-1", 0, forged.event("boot")).code == "other-device"


def test_a_file_not_signed_by_the_enrolled_key_is_quarantined(env: Env, tmp_path: Path) -> None:
    unit = ChainBuilder(tmp_path / "u1", device_id="unit-1")
    enroll(env.index, MemorySigner(), "unit-1")  # enrolled with another key
    out = env.ingest("unit-1", 0, unit.segment())
    assert (out.action, out.code) == ("quarantine", "verification-failed")
    assert "signature" in out.message


def test_an_unenrolled_or_revoked_device_is_quarantined(env: Env, tmp_path: Path) -> None:
    unit = ChainBuilder(tmp_path / "u1", device_id="unit-1")
    enroll(env.index, unit.signer, "unit-1")
    env.index.revoke("unit-1", T0_NS)
    out = env.ingest("unit-1", 0, unit.event("boot"))
    assert (out.action, out.code) == ("quarantine", "not-enrolled")


def test_a_file_differing_from_its_announced_hash_is_quarantined(env: Env, tmp_path: Path) -> None:
    unit = ChainBuilder(tmp_path / "u1", device_id="unit-1")
    enroll(env.index, unit.signer, "unit-1")
    path = unit.event("boot")
    upload = Upload("f" * 32, "unit-1", 0, path.name, "00" * 32, path.stat().st_size, "receiving", 0, 0)
    env.index.add_upload(upload)
    shutil.copyfile(path, env.uploads.path(upload.upload_id))
    assert env.ingestor.ingest(upload).code == "sha256-mismatch"


def test_contiguous_run_and_head_follow_out_of_order_arrival(env: Env, tmp_path: Path) -> None:
    unit = ChainBuilder(tmp_path / "u1", device_id="unit-1")
    enroll(env.index, unit.signer, "unit-1")
    paths = unit.incident(segments=1)
    through = []
    for seq in (2, 4, 0, 1, 3):
        out = env.ingest("unit-1", seq, paths[seq])
        assert out.action == "store" and out.receipt is not None
        doc = verify_receipt(out.receipt, env.key.public_key())
        through.append(doc["contiguous_through"])
        assert doc["chain_head"]["seq"] == max(s for s in (2, 4, 0, 1, 3)[: len(through)])
    assert through == [-1, -1, 0, 2, 4]


def test_entries_join_their_recording_and_marks_ask_for_review(env: Env, tmp_path: Path) -> None:
    from hq.lifecycle_index import SqlLifecycle

    rid = "0b6f1c5e-4f3a-4d2b-9a7e-5c1d2e3f4a5b"
    unit = ChainBuilder(tmp_path / "u1", device_id="unit-1", recording_id=rid)
    enroll(env.index, unit.signer, "unit-1")
    first = unit.segment()
    marked = unit.segment(fields={"marks": [{"id": 1, "mono_ns": 5, "utc_ns": T0_NS, "by": "input:mark"}]})
    stop = unit.event("record-stop", {"by": "input:record", "recording_id": rid})
    outside = unit.event("mark", {"by": "input:mark"})
    for seq, path in enumerate((first, marked, stop, outside)):
        assert env.ingest("unit-1", seq, path).action == "store"
    assert [(e.seq, e.recording_id, e.marks) for e in env.index.evidence_list("unit-1")] == [
        (0, rid, 0), (1, rid, 1), (2, rid, 0), (3, None, 1)]
    lifecycle = SqlLifecycle(env.index)
    rec = lifecycle.recording("unit-1", rid)
    assert rec is not None and (rec.entries, rec.marks, rec.categories) == (3, 1, ("pending-review",))
    assert rec.recorded_utc_ns == env.index.evidence("unit-1", 0).utc_start_ns  # type: ignore[union-attr]
    alone = lifecycle.recording("unit-1", "entry-3")
    assert alone is not None and alone.categories == ("pending-review",)


def test_ingest_and_receipts_go_to_the_custody_ledger(tmp_path: Path) -> None:
    from hq.app import lifecycle_service

    root = tmp_path / "H"
    root.mkdir()
    with SqliteIndex(root / "index.sqlite") as index:
        store, uploads, key = FileEvidenceStore(root), UploadArea(root), ed25519.Ed25519PrivateKey.generate()
        lc = lifecycle_service(index, store, lambda: T0_NS)
        ingestor = Ingestor(index, store, uploads, key, Auditor(index, "hq-ingest", lambda: T0_NS), lambda: T0_NS,
                            custody=lc.custody)
        env = Env(root, index, uploads, ingestor, key)
        unit = ChainBuilder(tmp_path / "u1", device_id="unit-1", recording_id="rec-1")
        enroll(index, unit.signer, "unit-1")
        path = unit.segment()
        env.ingest("unit-1", 0, path)
        env.ingest("unit-1", 0, path)  # a duplicate: a receipt again, no second ingest
        ledger = [(r.event_type, r.target, r.detail["seq"]) for r in lc.index.custody_log()]
        assert ledger == [("ingest", "unit-1/rec-1", 0), ("receipt", "unit-1/rec-1", 0), ("receipt", "unit-1/rec-1", 0)]
        first = lc.index.custody_log()[0].detail
        assert first["file_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert lc.index.verify_custody().intact


def test_a_copy_from_the_background_ring_belongs_to_the_range_asked_for() -> None:
    copy = {"type": "segment", "recording_id": None, "flags": ["background"],
            "background": {"ring_seq": 3, "ring_manifest_sha256": "ab" * 32, "request_id": "cd" * 16}}
    assert recording_of(copy) == "background-" + "cd" * 16
    assert recording_of({"type": "segment", "recording_id": "r-1", "flags": []}) == "r-1"
    assert recording_of({**copy, "flags": []}) is None  # no flag, no claim to a range
    assert recording_of({"type": "event", "detail": {"recording_id": "r-1"}}) == "r-1"
