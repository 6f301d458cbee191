"""The sync HTTP client and the upload sidecar: TLS pinning, signed requests, answers classified."""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.sync.client import (
    AuthError,
    ConfigurationError,
    HqClient,
    OffsetMismatch,
    ProtocolError,
    RejectedError,
    Timeouts,
    TransientError,
    upload_metadata,
)
from agent.sync.heartbeat import canonical_value, heartbeat_body
from agent.sync.state import FILE_NAME, UploadRecord, UploadState
from hq.tus import parse_metadata
from tests.evidence_util import MemorySigner
from tests.unit.test_sync_support import FakeHq, SlowTlsPeer, Unit, make_pki, make_unit, wait_for


@pytest.fixture
def unit(tmp_path: Path) -> Iterator[Unit]:
    u = make_unit(tmp_path)
    yield u
    u.hq.close()
    u.store.close()


def client(u: Unit, url: str | None = None, signer: MemorySigner | None = None,
           timeouts: Timeouts | None = None) -> HqClient:
    return HqClient(url or u.hq.url, u.pki.ca_pem, u.chain.device_id, signer or u.chain.signer, u.clock,
                    timeouts or Timeouts())


# Every read is quick (io_s 2 s), the whole answer never is: one overall deadline per request.
TRICKLE = Timeouts(connect_s=2.0, io_s=2.0, ingest_s=2.0, request_s=0.5)


def test_create_head_append_round_trip(unit: Unit) -> None:
    c = client(unit)
    url = c.create(10, {"device_id": unit.chain.device_id, "seq": "0", "filename": "0000000000.bcs",
                        "sha256": "ab" * 32})
    assert url.startswith(unit.hq.url + "/v1/uploads/")
    assert c.head(url).offset == 0 and c.head(url).length == 10
    assert c.append(url, 0, b"01234", last=False).offset == 5
    with pytest.raises(OffsetMismatch):
        c.append(url, 0, b"01234", last=False)
    assert c.head(url).offset == 5
    c.terminate(url)
    c.close()


def test_pace_sees_every_byte_of_the_body_in_slices(unit: Unit) -> None:
    c = client(unit)
    url = c.create(100_000, {"device_id": unit.chain.device_id, "seq": "1", "filename": "x.bcs", "sha256": "cd" * 32})
    paced: list[int] = []
    assert c.append(url, 0, os.urandom(40_000), last=False, pace=paced.append).offset == 40_000
    assert sum(paced) == 40_000 and max(paced) <= 16 * 1024 and len(paced) == 3


def test_an_unenrolled_key_is_refused_with_auth_error(unit: Unit) -> None:
    with pytest.raises(AuthError, match="401"):
        client(unit, signer=MemorySigner()).heartbeat(b"{}")


def test_a_clock_far_off_is_refused_and_the_error_says_so(unit: Unit) -> None:
    unit.hq.now_s = lambda: unit.clock.utc_ns() // 1_000_000_000 + 3600
    with pytest.raises(AuthError, match="expired") as info:
        client(unit).heartbeat(b"{}")
    assert "headquarters' clock says" in str(info.value)


def test_server_errors_are_transient_and_422_is_a_rejection(unit: Unit) -> None:
    c = client(unit)
    unit.hq.faults.fail_500 = 1
    with pytest.raises(TransientError) as info:
        c.head(unit.hq.url + "/v1/uploads/x")
    assert info.value.status == 500
    unit.hq.faults.reject_422 = True
    url = c.create(3, {"device_id": unit.chain.device_id, "seq": "2", "filename": "y.bcs", "sha256": "ef" * 32})
    with pytest.raises(RejectedError) as rej:
        c.append(url, 0, b"abc", last=True)
    assert rej.value.code == "bad-signature" and "quarantined" in str(rej.value)
    assert rej.value.notice_b64  # the signed notice travels with it, for the worker to check


def test_a_trickled_answer_fails_at_the_overall_deadline(unit: Unit) -> None:
    c = client(unit, timeouts=TRICKLE)
    url = c.create(10, {"device_id": unit.chain.device_id, "seq": "3", "filename": "z.bcs", "sha256": "01" * 32})
    unit.hq.faults.trickle_s = 0.05  # a ~150-byte answer over ~8 s
    for ask in (lambda: c.head(url), lambda: c.append(url, 0, b"01234", last=False),
                lambda: c.heartbeat(heartbeat_body({}, unit.chain.signer))):
        with pytest.raises(TransientError, match="within the 0.5 s deadline"):
            ask()
    # The client hung up on each answer long before its end.
    assert wait_for(lambda: len(unit.hq.trickled) == 3), unit.hq.trickled
    assert all(sent < whole for sent, whole in unit.hq.trickled), unit.hq.trickled
    unit.hq.faults.trickle_s = 0.0
    assert c.head(url).length == 10  # the next request opens a fresh connection


def test_a_kept_alive_connection_closed_while_idle_is_replaced_before_sending(unit: Unit) -> None:
    c = client(unit)
    unit.hq.faults.close_after_answer = True  # as an idle timeout: the answer, then the close
    c.heartbeat(heartbeat_body({}, unit.chain.signer))
    time.sleep(0.2)  # let the close arrive, as it has when the next heartbeat is due
    c.heartbeat(heartbeat_body({}, unit.chain.signer))
    assert len(unit.hq.heartbeats) == 2 and len(unit.hq.requests) == 2  # nothing sent on the closed one


def test_a_request_cut_unanswered_on_a_kept_alive_connection_is_sent_once_more_signed_anew(unit: Unit) -> None:
    c = client(unit)
    c.heartbeat(heartbeat_body({}, unit.chain.signer))
    unit.hq.faults.drop_unanswered = 1  # verified (its nonce seen), then closed without an answer
    assert c.heartbeat(heartbeat_body({}, unit.chain.signer))["ok"] is True  # a reused nonce would be a 401
    assert len(unit.hq.heartbeats) == 2 and len(unit.hq.requests) == 3
    unit.hq.faults.drop_unanswered = 2  # once only: the second failure is the caller's
    with pytest.raises(TransientError, match="Sending heartbeat"):
        c.heartbeat(heartbeat_body({}, unit.chain.signer))
    assert len(unit.hq.requests) == 5
    unit.hq.faults.drop_unanswered = 1  # on a connection opened for the request: not sent again
    with pytest.raises(TransientError, match="Sending heartbeat"):
        c.heartbeat(heartbeat_body({}, unit.chain.signer))
    assert len(unit.hq.requests) == 6 and len(unit.hq.heartbeats) == 2


def test_a_slow_answer_on_a_kept_alive_connection_is_not_sent_again(unit: Unit) -> None:
    c = client(unit, timeouts=Timeouts(connect_s=2.0, io_s=0.3, ingest_s=0.3, request_s=5.0))
    url = c.create(10, {"device_id": unit.chain.device_id, "seq": "4", "filename": "s.bcs", "sha256": "02" * 32})
    unit.hq.faults.slow_s = 1.0  # headquarters may be working on it: a timeout is never resent
    with pytest.raises(TransientError, match="timed out"):
        c.append(url, 0, b"01234", last=False)
    assert unit.hq.requests.count(("PATCH", urlsplit(url).path)) == 1


def test_a_trickled_tls_handshake_fails_at_the_overall_deadline(unit: Unit) -> None:
    peer = SlowTlsPeer(delay_s=0.05, give_up_s=8.0)
    try:
        c = client(unit, url=peer.url, timeouts=TRICKLE)
        with pytest.raises(TransientError, match="within the 0.5 s deadline"):
            c.heartbeat(b"{}")
        assert wait_for(lambda: peer.sent) and peer.gave_up == 0  # the client left first
    finally:
        peer.close()


def test_an_answer_cut_short_is_transient_not_believed(unit: Unit) -> None:
    c = client(unit)
    unit.hq.faults.short_body = True
    with pytest.raises(TransientError, match="IncompleteRead"):
        c.heartbeat(heartbeat_body({}, unit.chain.signer))


def test_error_text_from_the_network_is_clipped_and_printable(unit: Unit) -> None:
    c = client(unit)
    unit.hq.faults.fail_500 = 1
    unit.hq.faults.error_message = "x\n" * 50_000  # 150 kB of JSON
    with pytest.raises(TransientError) as info:
        c.heartbeat(b"{}")
    assert len(str(info.value)) < 400 and "\n" not in str(info.value)


def test_location_on_another_origin_is_refused(unit: Unit) -> None:
    c = client(unit)
    with pytest.raises(ProtocolError, match="points away"):
        c.resolve("https://evil.example/v1/uploads/1", "test")
    with pytest.raises(ProtocolError):
        c.resolve(f"http://127.0.0.1:{unit.hq.port}/v1/uploads/1", "test")
    assert c.resolve("/v1/uploads/abc", "test") == f"{unit.hq.url}/v1/uploads/abc"
    for elsewhere in ("/v1/heartbeat", "/v1/uploads/", "/v1/uploads/a/b", "/v1/uploads/../heartbeat",
                      "/v1/uploads/abc?x=1", "/other/abc"):
        with pytest.raises(ProtocolError, match="not an upload"):
            c.resolve(elsewhere, "test")


def test_another_ca_is_refused_before_anything_is_sent(unit: Unit, tmp_path: Path) -> None:
    other = make_pki(tmp_path / "other")
    c = HqClient(unit.hq.url, other.ca_pem, unit.chain.device_id, unit.chain.signer, unit.clock)
    with pytest.raises(TransientError, match="certificate"):
        c.heartbeat(b"{}")
    assert unit.hq.requests == []


def test_host_name_is_checked_against_the_certificate(unit: Unit, tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "named")
    hq = FakeHq(pki, {})
    try:
        # The certificate names 127.0.0.1 and localhost; reach it under another name for the same address.
        c = HqClient(f"https://127.0.0.2:{hq.port}", pki.ca_pem, "u", unit.chain.signer, unit.clock)
        with pytest.raises(TransientError):
            c.heartbeat(b"{}")
    finally:
        hq.close()


@pytest.mark.parametrize(("url", "ca"), [("http://hq.example", True), ("https://", True), ("https://hq", False)])
def test_unusable_settings_are_configuration_errors(unit: Unit, tmp_path: Path, url: str, ca: bool) -> None:
    with pytest.raises(ConfigurationError):
        HqClient(url, unit.pki.ca_pem if ca else tmp_path / "missing.pem", "u", unit.chain.signer, unit.clock)


@given(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e), min_size=1, max_size=40))
def test_metadata_is_what_headquarters_parses(name: str) -> None:
    text = upload_metadata({"device_id": "unit-1", "seq": "12", "filename": "0000000012.bcs", "sha256": "a" * 64,
                            "note": name})
    meta = parse_metadata(text)
    assert (meta.device_id, meta.seq, meta.filename, meta.sha256) == ("unit-1", 12, "0000000012.bcs", "a" * 64)


def test_canonical_value_makes_status_representable() -> None:
    assert canonical_value({"a": 1.0, "b": 0.125, "c": (1, "x"), "d": float("nan"), 2: Path("/x")}) == {
        "a": 1, "b": "0.125", "c": [1, "x"], "d": "nan", "2": "/x"}


# ---- the sidecar ----------------------------------------------------------------------------


def test_sidecar_round_trip_is_atomic_and_private(tmp_path: Path) -> None:
    state = UploadState(tmp_path / FILE_NAME)
    rec = UploadRecord("https://hq/v1/uploads/1", "ab" * 32, 1000, 65536, 5)
    state.put(3, rec)
    state.put(1, rec)
    assert stat.S_IMODE((tmp_path / FILE_NAME).stat().st_mode) == 0o600
    again = UploadState(tmp_path / FILE_NAME)
    assert again.seqs() == [1, 3] and again.get(3) == rec
    again.drop(3)
    again.drop(3)
    assert UploadState(tmp_path / FILE_NAME).seqs() == [1]
    assert [p.name for p in tmp_path.iterdir()] == [FILE_NAME]  # no temporary file left


@pytest.mark.parametrize("content", ["{", "[]", '{"version": 2, "uploads": {}}',
                                     '{"version": 1, "uploads": {"x": {}}}'])
def test_unreadable_sidecar_is_treated_as_empty(tmp_path: Path, content: str) -> None:
    (tmp_path / FILE_NAME).write_text(content)
    assert UploadState(tmp_path / FILE_NAME).seqs() == []


def test_sidecar_holds_what_resuming_needs(tmp_path: Path) -> None:
    state = UploadState(tmp_path / FILE_NAME)
    state.put(7, UploadRecord("https://hq/v1/uploads/7", "cd" * 32, 5, 65536, 9))
    doc = json.loads((tmp_path / FILE_NAME).read_text())
    assert doc == {"version": 1, "uploads": {"7": {"url": "https://hq/v1/uploads/7", "file_sha256": "cd" * 32,
                                                   "length": 5, "chunk_bytes": 65536, "created_utc_ns": 9}}}
