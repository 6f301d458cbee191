"""tus state handling of the headquarters service, driven without HTTP: offsets, checksums,
idempotent creation, termination, limits, restart, and the request gate (auth, Tus-Resumable)."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.evidence.httpsig import sign_request
from agent.evidence.keys import fingerprint, public_der, public_pem
from agent.evidence.receipt import decode_receipt_header, verify_receipt
from hq.errors import ApiError
from hq.index import SqliteIndex
from hq.service import HqService, Response
from hq.storage import FileEvidenceStore, UploadArea
from hq.tus import UploadMeta, encode_metadata, parse_metadata
from tests.evidence_util import ChainBuilder, MemorySigner

T0_NS = 1_790_000_000_000_000_000


class FakeClock:
    def __init__(self) -> None:
        self.ns = T0_NS

    def __call__(self) -> int:
        return self.ns


@dataclass
class Setup:
    root: Path
    index: SqliteIndex
    service: HqService
    unit: ChainBuilder
    receipt_key: ed25519.Ed25519PrivateKey
    clock: FakeClock

    def restart(self) -> HqService:
        return make_service(self.root, self.index, self.receipt_key, self.clock)


def make_service(root: Path, index: SqliteIndex, key: ed25519.Ed25519PrivateKey, clock: FakeClock) -> HqService:
    return HqService(index, FileEvidenceStore(root), UploadArea(root), key, clock, max_size=10_000_000)


def enroll(index: SqliteIndex, signer: MemorySigner, device_id: str) -> None:
    pub = signer.public_key()
    index.enroll(device_id, public_pem(pub).decode(), fingerprint(public_der(pub)), T0_NS)


@pytest.fixture
def s(tmp_path: Path) -> Iterator[Setup]:
    root = tmp_path / "H"
    root.mkdir()
    index = SqliteIndex(root / "index.sqlite")
    key = ed25519.Ed25519PrivateKey.generate()
    clock = FakeClock()
    unit = ChainBuilder(tmp_path / "unit", device_id="unit-1")
    enroll(index, unit.signer, "unit-1")
    yield Setup(root, index, make_service(root, index, key, clock), unit, key, clock)
    index.close()


def create_headers(path: Path, seq: int, device_id: str = "unit-1") -> dict[str, str]:
    data = path.read_bytes()
    meta = UploadMeta(device_id, seq, path.name, hashlib.sha256(data).hexdigest())
    return {"Tus-Resumable": "1.0.0", "Upload-Length": str(len(data)), "Upload-Metadata": encode_metadata(meta)}


def patch_headers(offset: int, chunk: bytes, checksum: bytes | None = None) -> dict[str, str]:
    digest = checksum if checksum is not None else hashlib.sha256(chunk).digest()
    return {
        "Tus-Resumable": "1.0.0",
        "Content-Type": "application/offset+octet-stream",
        "Upload-Offset": str(offset),
        "Upload-Checksum": "sha256 " + base64.b64encode(digest).decode(),
    }


def upload_id(r: Response) -> str:
    return r.headers["Location"].rsplit("/", 1)[1]


def status_of(call: object) -> int:
    assert callable(call)
    with pytest.raises(ApiError) as info:
        call()
    return info.value.status


def test_offsets_advance_and_completion_returns_a_receipt(s: Setup) -> None:
    path = s.unit.event("boot")
    data = path.read_bytes()
    r = s.service.create("unit-1", create_headers(path, 0))
    assert r.status == 201 and r.headers["Upload-Offset"] == "0"
    uid = upload_id(r)
    assert s.service.head("unit-1", uid).headers["Upload-Offset"] == "0"
    r = s.service.patch("unit-1", uid, patch_headers(0, data[:100]), data[:100])
    assert (r.status, r.headers["Upload-Offset"]) == (204, "100")
    assert s.service.head("unit-1", uid).headers["Upload-Offset"] == "100"
    r = s.service.patch("unit-1", uid, patch_headers(100, data[100:]), data[100:])
    assert r.status == 204 and r.headers["Upload-Offset"] == str(len(data))
    doc = verify_receipt(decode_receipt_header(r.headers["Bodycam-Receipt"]), s.receipt_key.public_key())
    assert (doc["seq"], doc["contiguous_through"], doc["received_utc_ns"]) == (0, 0, T0_NS)
    # The final answer is repeated for an empty PATCH at the end (the unit lost the reply).
    again = s.service.patch("unit-1", uid, patch_headers(len(data), b""), b"")
    assert again.status == 204 and again.headers["Bodycam-Receipt"] == r.headers["Bodycam-Receipt"]
    head = s.service.head("unit-1", uid)
    assert head.headers["Upload-Offset"] == str(len(data)) and "Bodycam-Receipt" in head.headers


def test_offset_mismatch_is_409_with_the_real_offset(s: Setup) -> None:
    path = s.unit.event("boot")
    data = path.read_bytes()
    uid = upload_id(s.service.create("unit-1", create_headers(path, 0)))
    s.service.patch("unit-1", uid, patch_headers(0, data[:50]), data[:50])
    for offset in (0, 49, 51):
        with pytest.raises(ApiError) as info:
            s.service.patch("unit-1", uid, patch_headers(offset, data[offset:]), data[offset:])
        assert (info.value.status, info.value.headers["Upload-Offset"]) == (409, "50")


def test_checksum_mismatch_is_460_and_the_chunk_is_discarded(s: Setup) -> None:
    path = s.unit.event("boot")
    data = path.read_bytes()
    uid = upload_id(s.service.create("unit-1", create_headers(path, 0)))
    wrong = hashlib.sha256(b"something else").digest()
    assert status_of(lambda: s.service.patch("unit-1", uid, patch_headers(0, data[:80], wrong), data[:80])) == 460
    assert s.service.head("unit-1", uid).headers["Upload-Offset"] == "0"
    assert (
        status_of(lambda: s.service.patch("unit-1", uid, {**patch_headers(0, b""), "Upload-Checksum": "md5 x"}, b""))
        == 400
    )


def test_creation_is_idempotent_while_receiving(s: Setup) -> None:
    path = s.unit.event("boot")
    data = path.read_bytes()
    first = s.service.create("unit-1", create_headers(path, 0))
    s.service.patch("unit-1", upload_id(first), patch_headers(0, data[:30]), data[:30])
    second = s.service.create("unit-1", create_headers(path, 0))
    assert second.headers["Location"] == first.headers["Location"]
    assert second.headers["Upload-Offset"] == "30"


def test_creation_after_storage_answers_with_the_receipt(s: Setup) -> None:
    path = s.unit.event("boot")
    data = path.read_bytes()
    uid = upload_id(s.service.create("unit-1", create_headers(path, 0)))
    s.service.patch("unit-1", uid, patch_headers(0, data), data)
    again = s.service.create("unit-1", create_headers(path, 0))
    assert again.status == 201 and again.headers["Upload-Offset"] == str(len(data))
    assert (
        verify_receipt(decode_receipt_header(again.headers["Bodycam-Receipt"]), s.receipt_key.public_key())["seq"] == 0
    )


def test_creation_with_another_hash_for_a_stored_seq_is_409_and_audited(s: Setup) -> None:
    path = s.unit.event("boot")
    data = path.read_bytes()
    uid = upload_id(s.service.create("unit-1", create_headers(path, 0)))
    s.service.patch("unit-1", uid, patch_headers(0, data), data)
    other = ChainBuilder(s.root.parent / "fork", signer=s.unit.signer, device_id="unit-1").event("boot")
    assert status_of(lambda: s.service.create("unit-1", create_headers(other, 0))) == 409
    [refusal] = [a for a in s.index.audit_log("upload-create") if a.outcome == "refused"]
    assert refusal.detail["reason"] == "conflict"


def test_creation_rules(s: Setup) -> None:
    path = s.unit.event("boot")
    h = create_headers(path, 0)
    assert status_of(lambda: s.service.create("unit-1", {**h, "Upload-Length": "0"})) == 400
    assert status_of(lambda: s.service.create("unit-1", {**h, "Upload-Length": "10000001"})) == 413
    assert status_of(lambda: s.service.create("unit-1", {**h, "Upload-Length": "-1"})) == 400
    assert status_of(lambda: s.service.create("unit-1", {**h, "Upload-Defer-Length": "1"})) == 400
    assert status_of(lambda: s.service.create("unit-1", {**h, "Upload-Metadata": "seq MA=="})) == 400
    # Another device's entry, announced by this one.
    assert status_of(lambda: s.service.create("unit-1", create_headers(path, 0, device_id="unit-2"))) == 403


def test_metadata_parsing() -> None:
    meta = UploadMeta("unit-1", 12, "0000000012.bcs", "ab" * 32)
    assert parse_metadata(encode_metadata(meta)) == meta
    for bad in ("device_id dW5pdA==", "seq !!!", "device_id Li4=,seq MQ==,filename YQ==,sha256 " + "YQ==" * 1):
        with pytest.raises(ApiError):
            parse_metadata(bad)


def test_chunk_past_the_length_and_wrong_content_type_are_refused(s: Setup) -> None:
    path = s.unit.event("boot")
    data = path.read_bytes() + b"extra"
    uid = upload_id(s.service.create("unit-1", create_headers(path, 0)))
    assert status_of(lambda: s.service.patch("unit-1", uid, patch_headers(0, data), data)) == 400
    h = {**patch_headers(0, data[:5]), "Content-Type": "application/octet-stream"}
    assert status_of(lambda: s.service.patch("unit-1", uid, h, data[:5])) == 415


def test_termination_removes_the_upload(s: Setup) -> None:
    path = s.unit.event("boot")
    uid = upload_id(s.service.create("unit-1", create_headers(path, 0)))
    assert s.service.terminate("unit-1", uid).status == 204
    assert not (s.root / "uploads" / f"{uid}.part").exists()
    assert status_of(lambda: s.service.head("unit-1", uid)) == 404
    assert status_of(lambda: s.service.terminate("unit-1", uid)) == 404
    # A new creation of the same entry starts afresh.
    assert upload_id(s.service.create("unit-1", create_headers(path, 0))) != uid


def test_a_completed_upload_cannot_be_terminated(s: Setup) -> None:
    path = s.unit.event("boot")
    data = path.read_bytes()
    uid = upload_id(s.service.create("unit-1", create_headers(path, 0)))
    s.service.patch("unit-1", uid, patch_headers(0, data), data)
    assert status_of(lambda: s.service.terminate("unit-1", uid)) == 409
    assert (s.root / "evidence" / "unit-1" / "0000000000.bcs").read_bytes() == data


def test_another_devices_upload_is_invisible(s: Setup) -> None:
    other = MemorySigner()
    enroll(s.index, other, "unit-2")
    uid = upload_id(s.service.create("unit-1", create_headers(s.unit.event("boot"), 0)))
    assert status_of(lambda: s.service.head("unit-2", uid)) == 404
    assert status_of(lambda: s.service.patch("unit-2", uid, patch_headers(0, b"x"), b"x")) == 404
    assert status_of(lambda: s.service.terminate("unit-2", uid)) == 404


def test_offset_survives_a_restart_and_a_lost_upload_file(s: Setup) -> None:
    path = s.unit.event("boot")
    data = path.read_bytes()
    uid = upload_id(s.service.create("unit-1", create_headers(path, 0)))
    s.service.patch("unit-1", uid, patch_headers(0, data[:70]), data[:70])
    restarted = s.restart()
    assert restarted.head("unit-1", uid).headers["Upload-Offset"] == "70"
    r = restarted.patch("unit-1", uid, patch_headers(70, data[70:]), data[70:])
    assert r.status == 204 and "Bodycam-Receipt" in r.headers
    # Indexed but its file never made it to disk (a crash in between): it restarts at 0.
    uid2 = upload_id(restarted.create("unit-1", create_headers(s.unit.event("shutdown"), 1)))
    (s.root / "uploads" / f"{uid2}.part").unlink()
    assert restarted.head("unit-1", uid2).headers["Upload-Offset"] == "0"


def signed(s: Setup, method: str, uri: str, headers: dict[str, str], body: bytes = b"") -> dict[str, str]:
    now_s = s.clock.ns // 1_000_000_000
    return {**headers, **sign_request(method, uri, headers, body, "unit-1", s.unit.signer, now_s)}


def test_the_request_gate(s: Setup) -> None:
    uri = "https://127.0.0.1:8443/v1/uploads/"
    path = s.unit.event("boot")
    route = s.service.route("POST", "/v1/uploads/")
    assert route.max_body == 0
    h = signed(s, "POST", uri, create_headers(path, 0))
    assert s.service.handle(route, "POST", uri, h, b"", "127.0.0.1").status == 201
    replay = s.service.handle(route, "POST", uri, h, b"", "127.0.0.1")
    assert replay.status == 401 and json.loads(replay.body)["error"]["code"] == "unauthorized"
    no_tus = {k: v for k, v in signed(s, "POST", uri, create_headers(path, 0)).items() if k != "Tus-Resumable"}
    assert s.service.handle(route, "POST", uri, no_tus, b"", "127.0.0.1").status == 412
    s.clock.ns += 301 * 1_000_000_000
    stale = s.service.handle(route, "POST", uri, h, b"", "127.0.0.1")
    assert stale.status == 401
    assert [a.detail["reason"] for a in s.index.audit_log("auth")] == ["replay", "expired"]


def test_routing() -> None:
    assert HqService.route("PATCH", "/v1/uploads/" + "a" * 32).max_body == 4 * 1024 * 1024
    assert HqService.route("POST", "/v1/heartbeat").name == "heartbeat"
    with pytest.raises(ApiError) as info:
        HqService.route("GET", "/v1/uploads/")
    assert info.value.status == 405 and "POST" in info.value.headers["Allow"]
    with pytest.raises(ApiError) as info:
        HqService.route("PATCH", "/v1/uploads/../../etc")
    assert info.value.status == 404
