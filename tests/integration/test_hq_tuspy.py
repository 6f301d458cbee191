"""tus 1.0 conformance with the official Python client, tuspy, against a real ``bodycam-hq serve``.

tuspy does every request itself (``requests``); the one change, in ``SignedUploader``, is the
headers it is given: each request is signed (RFC 9421) by the unit's device key over exactly
what tuspy sends, which is what a unit in the field does. tuspy checksums its chunks with sha1,
the algorithm the tus checksum extension requires.
"""

from __future__ import annotations

import base64
import hashlib
import io
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from tusclient.client import TusClient
from tusclient.uploader import Uploader

from agent.evidence.httpsig import sign_request
from agent.evidence.keys import load_receipt_public
from agent.evidence.receipt import decode_receipt_header, verify_receipt
from tests.evidence_util import ChainBuilder, MemorySigner
from tests.integration.agent_util import run_cli
from tests.integration.hq_util import HqProcess, hq_keygen

DEVICE = "unit-tus-1"


class SignedUploader(Uploader):  # type: ignore[misc]
    """tuspy's Uploader, each request signed. tuspy asks ``get_headers`` for every request; what
    it is for is known from the method that asks (creation, the offset's HEAD, else a PATCH of
    ``get_request_length()`` bytes from ``offset``)."""

    signer: MemorySigner
    source: bytes = b""  # the file tuspy uploads
    doing: str | None = None

    def _signed(self, method: str, url: str, headers: dict[str, str], body: bytes) -> dict[str, str]:
        return {**headers, **sign_request(method, url, headers, body, DEVICE, self.signer, int(time.time()))}

    def get_url_creation_headers(self) -> dict[str, str]:
        self.doing = "POST"
        try:
            headers = super().get_url_creation_headers()
        finally:
            self.doing = None
        return self._signed("POST", self.client.url, headers, b"")

    def get_offset(self) -> int:
        self.doing = "HEAD"
        try:
            return int(super().get_offset())
        finally:
            self.doing = None

    def get_headers_plain(self) -> dict[str, str]:
        return dict(super().get_headers())

    def get_headers(self) -> dict[str, str]:
        headers = self.get_headers_plain()
        if self.doing == "POST":
            return headers
        if self.doing == "HEAD":
            return self._signed("HEAD", self.url, headers, b"")
        # The bytes tuspy reads next (from its stream, which it has placed at the offset already).
        chunk = self.source[self.offset : self.offset + self.get_request_length()]
        digest = base64.b64encode(hashlib.sha1(chunk).digest()).decode("ascii")
        # The same names and values tuspy's request sets, so the signed fields are the sent ones.
        headers.update({"upload-offset": str(self.offset), "Content-Type": "application/offset+octet-stream",
                        "upload-checksum": f"sha1 {digest}"})
        return self._signed("PATCH", self.url, headers, chunk)


@pytest.fixture
def hq(tmp_path: Path) -> Iterator[tuple[HqProcess, ChainBuilder, Path]]:
    data = tmp_path / "H"
    hq_keygen(data)
    chain = ChainBuilder(tmp_path / "unit", device_id=DEVICE)
    pub = chain.write_device_pub(tmp_path / "device.pub")
    res = run_cli("hq", "enroll", "--data-dir", str(data), "--device-id", DEVICE, "--device-pub", str(pub))
    assert res.returncode == 0, res.stderr
    proc = HqProcess(data)
    try:
        yield proc, chain, data
    finally:
        proc.stop()


def uploader(url: str, chain: ChainBuilder, path: Path, chunk_size: int) -> SignedUploader:
    data = path.read_bytes()
    client = TusClient(url + "/v1/uploads/")
    up = SignedUploader(
        file_stream=io.BytesIO(data), client=client, chunk_size=chunk_size, upload_checksum=True,
        metadata={"device_id": DEVICE, "seq": "0", "filename": path.name, "sha256": hashlib.sha256(data).hexdigest()},
    )
    up.signer, up.source = chain.signer, data
    return up


def test_tuspy_uploads_a_sealed_segment_that_is_verified_and_receipted(
        hq: tuple[HqProcess, ChainBuilder, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    proc, chain, data = hq
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(data / "keys" / "ca.pem"))  # requests' own trust setting
    path = chain.segment(payload=bytes(range(256)) * 1500)  # seq 0, sealed to headquarters' key
    options = requests.options(proc.url + "/v1/uploads/", timeout=30)
    assert options.status_code in (200, 204)
    assert options.headers["Tus-Version"] == "1.0.0"
    assert options.headers["Tus-Extension"] == "creation,checksum,termination,expiration"
    assert options.headers["Tus-Checksum-Algorithm"] == "sha1,sha256"
    assert int(options.headers["Tus-Max-Size"]) == 4 * 1024**3

    first = uploader(proc.url, chain, path, 100_000)
    first.upload(stop_at=250_000)  # part of it, then this client is gone
    head = requests.head(first.url, headers=first._signed("HEAD", first.url, first.get_headers_plain(), b""),
                         timeout=30)
    assert head.headers["Upload-Offset"] == "250000" and head.headers["Upload-Length"] == str(path.stat().st_size)
    announced = {k: base64.b64decode(v).decode() for k, v in
                 (item.split(" ") for item in head.headers["Upload-Metadata"].split(","))}
    assert announced == first.metadata

    up = uploader(proc.url, chain, path, 100_000)  # another client resumes it from the server's offset
    up.set_url(first.url)
    up.offset = up.get_offset()
    assert up.offset == 250_000
    up.upload()
    assert up.offset == path.stat().st_size
    receipt = verify_receipt(decode_receipt_header(up.request.response_headers["bodycam-receipt"]),
                             load_receipt_public(data / "keys" / "hq.pub"))
    assert (receipt["device_id"], receipt["seq"]) == (DEVICE, 0)
    assert receipt["file_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    stored = data / "evidence" / DEVICE / "0000000000.bcs"
    assert stored.read_bytes() == path.read_bytes()


def test_a_chunk_altered_on_the_way_is_refused_460_and_discarded(
        hq: tuple[HqProcess, ChainBuilder, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    proc, chain, data = hq
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(data / "keys" / "ca.pem"))
    path = chain.event("boot")
    up = uploader(proc.url, chain, path, 1 << 20)
    up.set_url(up.create_url())
    headers = up.get_headers_plain()
    chunk = path.read_bytes()
    wrong = base64.b64encode(hashlib.sha1(chunk + b"!").digest()).decode()
    headers.update({"upload-offset": "0", "Content-Type": "application/offset+octet-stream",
                    "upload-checksum": f"sha1 {wrong}"})
    # A session closed at once: the service's shutdown waits for a keep-alive connection left open.
    with requests.Session() as http, http.patch(up.url, data=chunk, timeout=30,
                                                headers=up._signed("PATCH", up.url, headers, chunk)) as answer:
        assert answer.status_code == 460 and answer.json()["error"]["code"] == "checksum-mismatch"
    assert up.get_offset() == 0  # the chunk was discarded
