"""The decrypt component on a real unix socket: plaintext back, refusals, bounds, permissions."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import x25519

from agent.evidence.manifest import parse_manifest_record
from agent.evidence.segment import scan
from hq.decrypt_client import DecryptClient, DecryptClientError
from hq.decryptd import DecryptdError, Decryptor, DecryptServer, Limits
from hq.decryptwire import request_line
from tests.evidence_util import ChainBuilder


def _serve(path: Path, key: x25519.X25519PrivateKey, limits: Limits) -> Iterator[DecryptServer]:
    server = DecryptServer(path, Decryptor(key, limits))
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        t.join(5)


@pytest.fixture
def chain(tmp_path: Path) -> ChainBuilder:
    return ChainBuilder(tmp_path / "chain")


@pytest.fixture
def daemon(tmp_path: Path, chain: ChainBuilder) -> Iterator[DecryptServer]:
    yield from _serve(tmp_path / "d.sock", chain.hq_key, Limits(max_jobs=1, queue_s=0.3, deadline_s=5, idle_s=1))


def _manifest(path: Path) -> dict[str, object]:
    with path.open("rb") as fh:
        s = scan(fh)
    assert s.manifest_record is not None
    return parse_manifest_record(s.manifest_record).manifest


def test_a_segment_comes_back_as_its_plaintext(daemon: DecryptServer, chain: ChainBuilder) -> None:
    payload = os.urandom(300_000)
    seg = chain.segment(payload)
    m = _manifest(seg)
    client = DecryptClient(daemon.path)
    with seg.open("rb") as fh:
        plain = client.segment(fh, seg.stat().st_size, device_id=chain.device_id, seq=0,
                               plaintext_sha256=m["plaintext"]["sha256"])  # type: ignore[index]
    assert plain == payload
    assert stat.S_IMODE(daemon.path.stat().st_mode) == 0o600
    assert client.ping()["busy"] == 0


def test_a_wrong_plaintext_hash_is_refused(daemon: DecryptServer, chain: ChainBuilder) -> None:
    seg = chain.segment(b"x" * 100_000)
    with seg.open("rb") as fh, pytest.raises(DecryptClientError) as err:
        DecryptClient(daemon.path).segment(fh, seg.stat().st_size, device_id="d", seq=0,
                                           plaintext_sha256=hashlib.sha256(b"other").hexdigest())
    assert err.value.code == "mismatch"


def test_a_segment_sealed_to_another_key_is_refused(daemon: DecryptServer, tmp_path: Path) -> None:
    other = ChainBuilder(tmp_path / "other")
    seg = other.segment()
    with seg.open("rb") as fh, pytest.raises(DecryptClientError) as err:
        DecryptClient(daemon.path).segment(fh, seg.stat().st_size, device_id="d", seq=0, plaintext_sha256=None)
    assert err.value.code == "decrypt"
    assert "sealed to headquarters key" in str(err.value)


def test_a_cut_segment_is_refused(daemon: DecryptServer, chain: ChainBuilder) -> None:
    data = chain.segment(os.urandom(200_000)).read_bytes()
    cut = data[: len(data) // 2]
    with pytest.raises(DecryptClientError) as err:
        DecryptClient(daemon.path).segment(io.BytesIO(cut), len(cut), device_id="d", seq=0, plaintext_sha256=None)
    assert err.value.code == "decrypt"


def test_sealed_metadata_opens(daemon: DecryptServer, chain: ChainBuilder) -> None:
    seg = chain.segment()
    m = _manifest(seg)
    meta = DecryptClient(daemon.path).metadata(chain.device_id, 0, str(m["sealed"]))
    assert meta["gnss"] == [{"lat_e7": 515000000, "lon_e7": -1200000}]
    with pytest.raises(DecryptClientError) as err:  # bound to its entry: another seq does not open it
        DecryptClient(daemon.path).metadata(chain.device_id, 1, str(m["sealed"]))
    assert err.value.code == "decrypt"


def test_a_bad_request_line_gets_one_clear_refusal(daemon: DecryptServer) -> None:
    for line, says in ((b"hello\n", "not JSON"), (request_line({"op": "burn"}), "op must be"),
                       (request_line({"op": "segment", "device_id": "d", "seq": 0, "length": -1}), "length")):
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(daemon.path))
            s.sendall(line)
            answer = s.makefile("rb").read()
        assert answer[:1] == b"X" and b"bad-request" in answer and says.encode() in answer


def test_busy_when_every_slot_is_taken_and_a_stalled_client_hits_the_deadline(
    tmp_path: Path, chain: ChainBuilder
) -> None:
    seg = chain.segment(os.urandom(100_000))
    data = seg.read_bytes()
    for daemon in _serve(tmp_path / "b.sock", chain.hq_key, Limits(max_jobs=1, queue_s=0.3, idle_s=3)):
        client = DecryptClient(daemon.path)
        with socket.socket(socket.AF_UNIX) as hog:  # takes the only slot, sends a little and stalls
            hog.connect(str(daemon.path))
            hog.sendall(request_line({"op": "segment", "device_id": "d", "seq": 0, "length": len(data),
                                      "plaintext_sha256": None}) + data[:100])
            deadline = time.monotonic() + 10
            while client.ping()["busy"] != 1:  # the daemon has taken the hog's request
                assert time.monotonic() < deadline
                time.sleep(0.01)
            with pytest.raises(DecryptClientError) as err:
                client.segment(io.BytesIO(data), len(data), device_id="d", seq=0, plaintext_sha256=None)
            assert err.value.code == "busy"
            answer = hog.makefile("rb").read()  # the idle bound ends the stalled request
        assert b"deadline" in answer
        with seg.open("rb") as fh:  # and the slot is free again
            assert client.segment(fh, len(data), device_id="d", seq=0, plaintext_sha256=None)


def test_a_live_daemon_is_not_replaced_and_a_stale_socket_is(tmp_path: Path, chain: ChainBuilder) -> None:
    path = tmp_path / "d.sock"
    for _server in _serve(path, chain.hq_key, Limits()):
        with pytest.raises(DecryptdError, match="already listens"):
            DecryptServer(path, Decryptor(chain.hq_key, Limits()))
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # a socket file nobody listens on, as a killed daemon leaves it
    for server in _serve(path, chain.hq_key, Limits()):
        assert DecryptClient(server.path).ping()["ok"] is True


def test_the_socket_can_be_opened_to_a_group(tmp_path: Path, chain: ChainBuilder) -> None:
    server = DecryptServer(tmp_path / "g.sock", Decryptor(chain.hq_key, Limits()), group=os.getegid())
    try:
        assert stat.S_IMODE((tmp_path / "g.sock").stat().st_mode) == 0o660
    finally:
        server.server_close()
    assert not (tmp_path / "g.sock").exists()


def test_the_client_says_what_to_start_when_no_daemon_answers(tmp_path: Path) -> None:
    with pytest.raises(DecryptClientError, match="start `bodycam-hq decryptd`") as err:
        DecryptClient(tmp_path / "none.sock").ping()
    assert err.value.code == "unavailable"
