"""The sync worker against a fake tus server over TLS: order, resumption, faults, receipts, alarms."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.evidence.receipt import verify_heartbeat
from agent.sync.client import Timeouts
from agent.sync.state import FILE_NAME
from tests.unit.test_sync_support import Unit, drive, make_pki, make_unit

CHUNK = 64 * 1024


@pytest.fixture
def unit(tmp_path: Path) -> Iterator[Unit]:
    u = make_unit(tmp_path)
    yield u
    u.hq.close()
    u.store.close()


def done(u: Unit) -> bool:
    return not u.store.pending_upload() and not u.store.segments("uploading")


def assert_acknowledged_and_identical(u: Unit, seqs: list[int]) -> None:
    for seq in seqs:
        seg = u.store.segment(seq)
        assert seg is not None and seg.state == "acknowledged", seg
        assert seg.receipt is not None and seg.receipt["seq"] == seq
        assert seg.receipt["manifest_sha256"] == seg.manifest_sha256
        assert u.hq.evidence[(u.chain.device_id, seq)] == u.file(seq)


def states(u: Unit) -> dict[int, str]:
    return {s.seq: s.state for s in u.store.segments()}


# ---- the ordinary path ----------------------------------------------------------------------


def test_uploads_everything_priority_first_with_verified_receipts(unit: Unit) -> None:
    seqs = [unit.add_event("boot"), unit.add_segment(), unit.add_segment(priority=1), unit.add_segment()]
    worker = unit.worker()
    drive(worker, unit.clock, until=lambda: done(unit))
    assert_acknowledged_and_identical(unit, seqs)
    completed = [a.detail["seq"] for a in unit.audit("upload-complete")]
    assert completed == [2, 0, 1, 3]  # priority first, then oldest first
    assert [a.detail["seq"] for a in unit.audit("upload-start")] == completed
    assert all(a.outcome == "ok" for a in unit.audit())
    # Nothing left to resume: the sidecar is empty once every upload has its receipt.
    assert json.loads((unit.data_dir / FILE_NAME).read_text())["uploads"] == {}
    st = worker.get_status()
    assert st["connected"] and st["state"] == "idle" and st["alarm"] is None
    assert st["backlog"] == {"entries": 0, "bytes": 0}
    assert st["last_receipt"]["seq"] == 3 and st["last_error"] is None
    assert st["sent_bytes"] == sum(len(unit.file(s)) for s in seqs)


def test_receipt_is_kept_whole_so_it_can_be_checked_again(unit: Unit) -> None:
    seq = unit.add_segment()
    drive(unit.worker(), unit.clock, until=lambda: done(unit))
    receipt = unit.store.segment(seq).receipt  # type: ignore[union-attr]
    assert receipt is not None
    from agent.evidence.receipt import decode_receipt_header, verify_receipt
    assert verify_receipt(decode_receipt_header(receipt["raw_b64"]), unit.hq.receipt_key.public_key())["seq"] == seq


def test_heartbeat_is_signed_and_carries_status_backlog_and_chain_head(unit: Unit) -> None:
    unit.add_event("boot")
    unit.add_segment()
    worker = unit.worker(heartbeat_s=30.0)
    worker.run_once()
    assert len(unit.hq.heartbeats) == 1
    hb = unit.hq.heartbeats[0]
    head = unit.store.chain_head(unit.chain.device_id)
    assert hb["chain_head"] == {"seq": head[0], "hash": head[1]}  # type: ignore[index]
    assert hb["device_id"] == unit.chain.device_id
    assert hb["battery"] == {"pct": "87.5", "charging": False}  # floats made canonical
    assert hb["sync"]["backlog_entries"] == 2 and hb["sync"]["backlog_bytes"] > 200_000
    # The next one is due after heartbeat_s, not at every pass.
    unit.clock.advance(10)
    worker.run_once()
    assert len(unit.hq.heartbeats) == 1
    unit.clock.advance(21)
    worker.run_once()
    assert len(unit.hq.heartbeats) == 2
    assert unit.hq.heartbeats[1]["sync"]["backlog_entries"] == 0


def test_heartbeat_body_verifies_with_the_device_key(unit: Unit) -> None:
    from agent.sync.heartbeat import heartbeat_body
    body = heartbeat_body({"x": 1.25, "y": (1, 2.0), "z": None}, unit.chain.signer)
    assert verify_heartbeat(body, unit.chain.signer.public_key()) == {"x": "1.25", "y": [1, 2], "z": None}


# ---- cuts and resumption --------------------------------------------------------------------


@pytest.mark.parametrize("cuts", [[100_000], [10, 70_000, 150_000, 199_000]])
def test_cut_mid_chunk_resumes_and_resends_at_most_one_chunk_per_cut(unit: Unit, cuts: list[int]) -> None:
    seq = unit.add_segment(size=200_000)
    unit.hq.faults.cut_at = list(cuts)
    worker = unit.worker()
    drive(worker, unit.clock, until=lambda: done(unit))
    assert_acknowledged_and_identical(unit, [seq])
    up = unit.hq.upload_for(seq)
    assert up is not None
    length = len(unit.file(seq))
    assert length < up.received_bytes <= length + len(cuts) * CHUNK
    errors = unit.audit("upload-error")
    assert len(errors) == len(cuts) and all(e.outcome == "failed" for e in errors)
    resumed = [a.detail for a in unit.audit("upload-start")][1:]
    assert all(d["resumed"] for d in resumed) and len(resumed) == len(cuts)


def test_answer_lost_after_the_chunk_was_stored_resends_nothing(unit: Unit) -> None:
    seq = unit.add_segment(size=200_000)
    unit.hq.faults.cut_after_store = [2 * CHUNK]
    drive(unit.worker(), unit.clock, until=lambda: done(unit))
    assert_acknowledged_and_identical(unit, [seq])
    assert unit.hq.upload_for(seq).received_bytes == len(unit.file(seq))  # type: ignore[union-attr]


def test_agent_restart_resumes_the_same_upload_from_the_servers_offset(unit: Unit) -> None:
    seq = unit.add_segment(size=300_000)
    unit.hq.faults.cut_at = [3 * CHUNK + 500]
    first = unit.worker()
    first.run_once()  # cut: the pass fails, and the process "dies" here
    assert states(unit)[seq] == "uploading"
    sidecar = json.loads((unit.data_dir / FILE_NAME).read_text())
    assert list(sidecar["uploads"]) == [str(seq)]
    offset_before = unit.store.segment(seq).upload_offset  # type: ignore[union-attr]
    assert offset_before == 3 * CHUNK
    posts = sum(1 for m, p in unit.hq.requests if m == "POST" and p.startswith("/v1/uploads"))
    second = unit.worker()  # a new process: same data dir, same store
    drive(second, unit.clock, until=lambda: done(unit))
    assert_acknowledged_and_identical(unit, [seq])
    # The same upload resumed (no second creation) and at most the cut chunk went twice.
    assert sum(1 for m, p in unit.hq.requests if m == "POST" and p.startswith("/v1/uploads")) == posts
    up = unit.hq.upload_for(seq)
    assert up is not None and up.received_bytes <= len(unit.file(seq)) + CHUNK
    start = unit.audit("upload-start")[-1].detail
    assert start["resumed"] and start["offset"] == 3 * CHUNK


def test_lost_sidecar_creates_again_and_headquarters_returns_the_same_upload(unit: Unit) -> None:
    seq = unit.add_segment(size=300_000)
    unit.hq.faults.cut_at = [2 * CHUNK + 10]
    unit.worker().run_once()
    (unit.data_dir / FILE_NAME).write_text("{not json")
    drive(unit.worker(), unit.clock, until=lambda: done(unit))
    assert_acknowledged_and_identical(unit, [seq])
    assert len(unit.hq.uploads) == 1
    assert unit.hq.upload_for(seq).received_bytes <= len(unit.file(seq)) + CHUNK  # type: ignore[union-attr]


def test_wrong_offset_in_an_answer_is_an_error_then_head_is_believed(unit: Unit) -> None:
    seq = unit.add_segment()
    unit.hq.faults.wrong_offset_once = True
    drive(unit.worker(), unit.clock, until=lambda: done(unit))
    assert_acknowledged_and_identical(unit, [seq])
    errors = unit.audit("upload-error")
    assert len(errors) == 1 and "answered offset" in errors[0].detail["error"]


def test_head_claiming_bytes_never_sent_is_refused_and_never_acknowledged(unit: Unit) -> None:
    seq = unit.add_segment(size=300_000)
    unit.hq.faults.cut_at = [CHUNK + 100]
    worker = unit.worker()
    worker.run_once()
    unit.hq.faults.head_offset_bonus = 3 * CHUNK
    drive(worker, unit.clock, passes=8)
    assert states(unit)[seq] == "uploading"
    assert any("claims" in a.detail["error"] for a in unit.audit("upload-error"))
    assert "claims" in worker.get_status()["last_error"]["message"]


def test_offset_mismatch_409_rereads_the_offset(unit: Unit) -> None:
    seq = unit.add_segment(size=300_000)
    worker = unit.worker()
    # Another writer (a duplicate unit process, a proxy replay) moves the server ahead once.
    hits = {"n": 0}

    def bump(up: object) -> None:
        hits["n"] += 1
        if hits["n"] == 2:
            unit.hq.faults.on_patch = None
            u = unit.hq.upload_for(seq)
            assert u is not None
            u.data += unit.file(seq)[len(u.data):len(u.data) + CHUNK]

    unit.hq.faults.on_patch = bump
    drive(worker, unit.clock, until=lambda: done(unit))
    assert_acknowledged_and_identical(unit, [seq])
    assert unit.audit("upload-error") == []


# ---- server errors and backoff --------------------------------------------------------------


def test_500_backs_off_with_jitter_and_says_when_it_retries(unit: Unit) -> None:
    seq = unit.add_segment()
    unit.hq.faults.fail_500 = 3
    worker = unit.worker()
    waits = []
    for _ in range(3):
        waits.append(worker.run_once())
        st = worker.get_status()
        assert st["state"] == "backoff" and st["connected"]
        assert "500" in st["last_error"]["message"]
        assert st["next_retry_in_s"] == pytest.approx(waits[-1])
        assert st["next_retry_utc_ns"] > unit.clock.utc_ns() or waits[-1] == 0
        # Before the retry time a pass does nothing and only says how long is left.
        requests = len(unit.hq.requests)
        assert worker.run_once() <= waits[-1]
        assert len(unit.hq.requests) == requests
        unit.clock.advance(waits[-1] + 0.001)
    assert all(0 <= w <= c for w, c in zip(waits, [0.05, 0.1, 0.2], strict=True))
    drive(worker, unit.clock, until=lambda: done(unit))
    assert_acknowledged_and_identical(unit, [seq])
    assert worker.get_status()["next_retry_in_s"] is None


def test_slow_server_times_out_then_completes(unit: Unit) -> None:
    seq = unit.add_segment(size=100_000)
    unit.hq.faults.slow_s = 0.6
    worker = unit.worker(timeouts=__import__("agent.sync.client", fromlist=["Timeouts"]).Timeouts(2.0, 0.2, 0.2))
    worker.run_once()
    assert "timed out" in worker.get_status()["last_error"]["message"]
    assert states(unit)[seq] == "uploading"
    unit.hq.faults.slow_s = 0.0
    drive(worker, unit.clock, until=lambda: done(unit))
    assert_acknowledged_and_identical(unit, [seq])


def test_unreachable_headquarters_is_not_connected_and_keeps_everything(unit: Unit, tmp_path: Path) -> None:
    seq = unit.add_segment()
    unit.hq.close()
    worker = unit.worker()
    drive(worker, unit.clock, passes=4)
    st = worker.get_status()
    assert not st["connected"] and st["state"] == "backoff"
    assert st["backlog"]["entries"] == 1 and st["stalled_s"] > 0
    assert states(unit)[seq] == "sealed"


def test_tls_is_pinned_to_the_configured_ca(unit: Unit, tmp_path: Path) -> None:
    seq = unit.add_segment()
    other = make_pki(tmp_path / "other")
    worker = unit.worker()
    worker._ca_path = other.ca_pem  # a unit provisioned with another HQ's CA
    worker.run_once()
    assert "certificate" in worker.get_status()["last_error"]["message"]
    assert unit.hq.requests == [] and states(unit)[seq] == "sealed"


# ---- receipts that prove nothing ------------------------------------------------------------


@pytest.mark.parametrize(("mode", "reason"), [
    ("forged", "signature does not verify"),
    ("other-seq", "seq"),
    ("other-manifest", "manifest_sha256"),
    ("other-device", "device_id"),
    ("missing", "no receipt"),
    ("garbage", "receipt"),
])
def test_bad_receipt_never_acknowledges_and_says_what_happened(unit: Unit, mode: str, reason: str) -> None:
    seq, other = unit.add_segment(), unit.add_segment()
    unit.hq.faults.receipt = mode
    worker = unit.worker()
    drive(worker, unit.clock, passes=3)
    assert states(unit) == {seq: "uploading", other: "uploading"}
    assert all(s.receipt is None for s in unit.store.segments())
    rejected = unit.audit("receipt-rejected")
    assert [a.detail["seq"] for a in rejected] == [seq, other]  # one bad entry does not block the next
    assert all(a.outcome == "failed" and reason in a.detail["reason"] for a in rejected)
    assert unit.alarms and unit.alarms[0][0] == "receipt"
    assert worker.get_status()["alarm"]["kind"] == "receipt"
    assert unit.audit("upload-complete") == []
    # Once headquarters gives a real receipt, the deferred entries ask again and are acknowledged,
    # without sending their bytes a second time.
    unit.hq.faults.receipt = "good"
    received = unit.hq.upload_for(seq).received_bytes  # type: ignore[union-attr]
    unit.clock.advance(601)
    drive(worker, unit.clock, until=lambda: done(unit))
    assert_acknowledged_and_identical(unit, [seq, other])
    assert unit.hq.upload_for(seq).received_bytes == received  # type: ignore[union-attr]
    assert worker.get_status()["deferred"] == {}


def test_ingest_in_progress_is_collected_with_head_without_an_alarm(unit: Unit) -> None:
    seq = unit.add_segment()
    unit.hq.faults.ingest_pending = 3  # the completing PATCH and the first two HEADs say pending
    timeouts = Timeouts(connect_s=2.0, io_s=2.0, ingest_s=120.0)
    drive(unit.worker(timeouts=timeouts), unit.clock, until=lambda: done(unit))
    assert_acknowledged_and_identical(unit, [seq])
    assert unit.alarms == [] and unit.audit("receipt-rejected") == []
    tail = [m for m, _ in unit.hq.requests[-4:]]
    assert tail == ["HEAD", "HEAD", "HEAD", "PATCH"]  # the last PATCH is empty: it collects the receipt
    assert unit.hq.upload_for(seq).received_bytes == len(unit.file(seq))  # type: ignore[union-attr]
    waits = [w for w in unit.clock.sleeps if w > 0]
    assert round(sum(waits)) == 2 + 4 + 8  # HEAD after 2 s, then 4 s, then 8 s


def test_ingest_longer_than_the_wait_defers_the_entry_and_sends_nothing_again(unit: Unit) -> None:
    seq = unit.add_segment()
    unit.hq.faults.ingest_pending = 1000
    worker = unit.worker()
    drive(worker, unit.clock, passes=2)
    assert states(unit)[seq] == "uploading" and unit.alarms == []
    assert seq in worker.get_status()["deferred"]
    assert "still verifying" in worker.get_status()["last_error"]["message"]
    unit.hq.upload_for(seq).pending = 0  # type: ignore[union-attr]
    received = unit.hq.upload_for(seq).received_bytes  # type: ignore[union-attr]
    unit.clock.advance(601)
    drive(worker, unit.clock, until=lambda: done(unit))
    assert_acknowledged_and_identical(unit, [seq])
    assert unit.hq.upload_for(seq).received_bytes == received  # type: ignore[union-attr]


def test_422_quarantines_locally_keeps_the_file_and_alarms(unit: Unit) -> None:
    seq, nxt = unit.add_segment(), unit.add_segment()
    unit.hq.faults.reject_422 = True
    worker = unit.worker()
    worker.run_once()
    assert states(unit) == {seq: "quarantined", nxt: "quarantined"}
    assert (unit.data_dir / unit.store.segment(seq).path).exists()  # type: ignore[union-attr]
    refused = unit.audit("upload-refused")
    assert [a.detail["seq"] for a in refused] == [seq, nxt]
    assert refused[0].outcome == "refused" and refused[0].detail["code"] == "bad-signature"
    assert [k for k, _ in unit.alarms] == ["quarantined", "quarantined"]
    assert json.loads((unit.data_dir / FILE_NAME).read_text())["uploads"] == {}
    notice = unit.store.segment(seq).receipt  # type: ignore[union-attr]
    assert notice is not None and notice["code"] == "bad-signature" and notice["seq"] == seq  # kept as proof


@pytest.mark.parametrize("notice", ["missing", "forged", "other-seq", "other-file", "garbage"])
def test_a_refusal_without_a_valid_signed_notice_never_quarantines(unit: Unit, notice: str) -> None:
    seq, nxt = unit.add_segment(), unit.add_segment()
    unit.hq.faults.reject_422, unit.hq.faults.notice = True, notice
    worker = unit.worker(entry_retry_s=600.0)
    worker.run_once()
    # Whoever holds the TLS endpoint can send a 422: without headquarters' signature it moves nothing.
    assert states(unit) == {seq: "uploading", nxt: "uploading"}
    assert sorted(json.loads((unit.data_dir / FILE_NAME).read_text())["uploads"]) == [str(seq), str(nxt)]
    st = worker.get_status()
    assert st["alarm"]["kind"] == "refusal-unverified" and sorted(st["deferred"]) == [seq, nxt]
    refused = unit.audit("upload-refused")
    assert [(a.outcome, a.detail["reason"]) for a in refused] == [("failed", "refusal-unverified")] * 2
    patches = sum(1 for m, _ in unit.hq.requests if m == "PATCH")
    for _ in range(20):  # no hot loop: the entries wait entry_retry_s
        unit.clock.advance(20.0)
        worker.run_once()
    assert sum(1 for m, _ in unit.hq.requests if m == "PATCH") == patches
    # A real headquarters' signed notice then settles it, without sending the file again.
    received = unit.hq.upload_for(seq).received_bytes  # type: ignore[union-attr]
    unit.hq.faults.notice = "good"
    unit.clock.advance(600.0)
    worker.run_once()
    assert states(unit) == {seq: "quarantined", nxt: "quarantined"}
    assert unit.hq.upload_for(seq).received_bytes == received  # type: ignore[union-attr]
    assert unit.store.segment(seq).receipt["upload_id"] == unit.hq.upload_for(seq).id  # type: ignore[union-attr,index]


@pytest.mark.parametrize("status", [401, 403])
def test_refused_unit_stops_uploading_alarms_and_resumes_when_accepted(unit: Unit, status: int) -> None:
    seq = unit.add_segment()
    unit.hq.faults.auth = status
    worker = unit.worker(auth_retry_s=900.0)
    wait = worker.run_once()
    st = worker.get_status()
    assert st["state"] == "refused" and st["alarm"]["kind"] == "auth" and wait == pytest.approx(900.0)
    assert unit.alarms[0][0] == "auth" and str(status) in unit.alarms[0][1]
    assert [a.outcome for a in unit.audit("upload-refused")] == ["refused"]
    # Stopped: nothing is tried before auth_retry_s, and a still-refused probe audits nothing new.
    requests = len(unit.hq.requests)
    unit.clock.advance(500)
    worker.run_once()
    assert len(unit.hq.requests) == requests
    unit.clock.advance(401)
    worker.run_once()
    assert [m for m, _ in unit.hq.requests[requests:]] == ["POST"]  # only the heartbeat probe
    assert len(unit.audit("upload-refused")) == 1 and states(unit)[seq] == "sealed"
    unit.hq.faults.auth = 0
    unit.clock.advance(901)
    drive(worker, unit.clock, until=lambda: done(unit))
    assert_acknowledged_and_identical(unit, [seq])
    assert worker.get_status()["alarm"] is None
    assert [a.outcome for a in unit.audit("upload-authorised")] == ["ok"]


def test_conflict_defers_that_entry_and_uploads_the_others(unit: Unit) -> None:
    bad, good = unit.add_segment(), unit.add_segment()
    unit.hq.faults.conflict_seq = {bad}
    worker = unit.worker()
    worker.run_once()
    assert states(unit) == {bad: "sealed", good: "acknowledged"}
    assert unit.audit("upload-refused")[0].detail["reason"] == "conflict"
    assert unit.alarms[0][0] == "conflict"


def test_missing_file_is_deferred_and_audited_the_rest_goes_on(unit: Unit) -> None:
    gone, kept = unit.add_segment(), unit.add_segment()
    (unit.data_dir / unit.store.segment(gone).path).unlink()  # type: ignore[union-attr]
    worker = unit.worker()
    worker.run_once()
    assert states(unit) == {gone: "sealed", kept: "acknowledged"}
    err = unit.audit("upload-error")[0]
    assert err.detail["seq"] == gone and "No such file" in err.detail["error"]
    st = worker.get_status()
    assert st["deferred"] == {gone: 600.0} and st["backlog"]["entries"] == 1
    assert st["last_error"]["seq"] == gone


# ---- priority, bandwidth, threads -----------------------------------------------------------


def test_a_marked_entry_sealed_mid_upload_goes_before_the_rest(unit: Unit) -> None:
    big = unit.add_segment(size=600_000)
    later = unit.add_segment()
    marked: list[int] = []

    def seal_marked(up: object) -> None:
        if not marked:
            marked.append(unit.add_segment(priority=1))  # the recorder seals a marked segment

    unit.hq.faults.on_patch = seal_marked
    drive(unit.worker(), unit.clock, until=lambda: done(unit))
    order = [a.detail["seq"] for a in unit.audit("upload-complete")]
    assert order == [marked[0], big, later]
    assert_acknowledged_and_identical(unit, [big, later, marked[0]])
    up = unit.hq.upload_for(big)
    assert up is not None and up.received_bytes == len(unit.file(big))  # paused, not restarted


def test_bandwidth_cap_paces_the_upload(unit: Unit) -> None:
    seq = unit.add_segment(size=400_000)
    size = len(unit.file(seq))
    worker = unit.worker(bandwidth_bps=800_000)  # 100 kB/s
    t0 = unit.clock.monotonic_ns()
    worker.run_once()
    assert_acknowledged_and_identical(unit, [seq])
    elapsed_s = (unit.clock.monotonic_ns() - t0) / 1e9
    burst = 100_000 * 0.25
    assert elapsed_s >= (size - burst) / 100_000 - 0.01
    assert elapsed_s <= size / 100_000 + 1.0


def test_thread_uploads_and_stops_promptly_even_mid_request(unit: Unit) -> None:
    seq = unit.add_segment()
    worker = unit.worker(interval_s=0.05)
    worker.start()
    deadline = time.monotonic() + 20
    while not done(unit) and time.monotonic() < deadline:
        time.sleep(0.02)
        unit.clock.advance(0.05)
    assert_acknowledged_and_identical(unit, [seq])
    nxt = unit.add_segment()
    unit.hq.faults.slow_s = 5.0  # the next request hangs at headquarters
    worker.kick()
    while time.monotonic() < deadline:  # until a chunk of it is in flight
        up = unit.hq.upload_for(nxt)
        if up is not None and up.patches:
            break
        time.sleep(0.02)
    t = time.monotonic()
    worker.stop(timeout_s=5.0)
    assert time.monotonic() - t < 2.0
    assert not any(th.name == "sync" and th.is_alive() for th in threading.enumerate())
    assert worker.get_status()["state"] == "stopped"
    assert states(unit)[nxt] == "uploading"  # resumes at the next start
    assert unit.audit("upload-error") == []  # a stop is not an error


def test_remembered_uploads_of_settled_entries_are_forgotten(unit: Unit) -> None:
    from agent.sync.state import UploadRecord, UploadState
    seq = unit.add_segment()
    state = UploadState(unit.data_dir / FILE_NAME)
    state.put(seq, UploadRecord(unit.hq.url + "/v1/uploads/old", "ab" * 32, 10, CHUNK, 0))
    state.put(99, UploadRecord(unit.hq.url + "/v1/uploads/gone", "ab" * 32, 10, CHUNK, 0))
    unit.store.mark_state(seq, "quarantined")  # settled while the agent was down
    unit.worker().run_once()
    assert json.loads((unit.data_dir / FILE_NAME).read_text())["uploads"] == {}
    assert unit.hq.requests[-1] == ("POST", "/v1/heartbeat")  # nothing else to do
