"""The format document and the verifier agree, strictly: one crafted file per point of issue 12.

Each crafted file is signed with the device key (``reseal``), so only the rule under test can
reject it; files the agent really writes must keep verifying.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from agent.evidence import canonical
from agent.evidence.chain import Entry, verify_chain
from agent.evidence.format import (
    REC_CHECKPOINT,
    REC_DATA,
    b64decode_strict,
)
from agent.evidence.keys import load_device_public, load_hq_private
from agent.evidence.media_check import check_media
from agent.evidence.verify import Report, verify_path
from agent.verify_cmd import proven
from agent.verify_cmd import run as verify_cmd
from tests.evidence_util import (
    ChainBuilder,
    Records,
    damage_packet,
    matroska,
    reseal,
    time_fields,
)


def _verify(b: ChainBuilder, hq: bool = False) -> Report:
    return verify_path(b.folder, b.signer.public_key(), hq_key=b.hq_key if hq else None, decode=check_media)


def _reasons(report: Report, name: str | None = None) -> list[str]:
    return [p.reason for p in report.problems if name is None or p.name == name]


def _set(key: str, value: Any) -> Any:
    def change(d: dict[str, Any]) -> dict[str, Any]:
        d[key] = value
        return d

    return change


def _drop(key: str) -> Any:
    def change(d: dict[str, Any]) -> dict[str, Any]:
        del d[key]
        return d

    return change


# -- section 8.5/8.8: the flag sets of each kind of entry ------------------------------------


def test_a_recovered_segment_as_the_agent_flags_it_verifies(tmp_path: Path) -> None:
    b = ChainBuilder(tmp_path / "segments")
    b.event("boot")
    b.salvaged(["recovered", "clock-unsynced"])
    report = _verify(b)
    assert report.ok, report.problems
    assert not [w for w in report.warnings if "recovered" in w.reason]


def test_a_recovered_segment_of_an_early_build_verifies_with_a_warning(tmp_path: Path) -> None:
    b = ChainBuilder(tmp_path / "segments")
    b.event("boot")
    b.salvaged(["recovered"])
    report = _verify(b)
    assert report.ok, report.problems
    assert any("early 0.1.0 build" in w.reason for w in report.warnings)


def test_a_recovered_segment_with_other_flags_is_a_problem(tmp_path: Path) -> None:
    b = ChainBuilder(tmp_path / "segments")
    b.event("boot")
    path = b.salvaged(["recovered", "clock-unsynced"])
    reseal(path, b.signer, manifest=_set("flags", ["clock-unsynced", "recovered", "stealth"]))
    assert any("a recovered segment is flagged exactly" in r for r in _reasons(_verify(b), path.name))


@pytest.mark.parametrize("flags", [["recovered"], ["stealth"]])
def test_a_flagged_event_is_a_problem(tmp_path: Path, flags: list[str]) -> None:
    b = ChainBuilder(tmp_path / "segments")
    b.event("boot")
    path = reseal(b.event("mark"), b.signer, manifest=_set("flags", flags))
    assert any("an event carries no flags" in r for r in _reasons(_verify(b), path.name))


def test_an_event_flagged_recovered_gets_no_pass_on_signing_order() -> None:
    """C6 skips the order check only for a recovered *segment* (signed by a later boot)."""

    def entry(seq: int, signed_ns: int, **extra: Any) -> Entry:
        m = {"seq": seq, "device_id": "d", "boot_id": "b", "prev": "0" * 64, "flags": [], **extra}
        m["time"] = time_fields(signed_ns, signed_ns)
        return Entry(f"{seq:010d}.bcs", m, f"{seq:064x}")

    boot = entry(0, 5_000_000_000, type="event", event="boot")
    late = entry(1, 1_000_000_000, type="event", event="mark", flags=["recovered"])
    late.manifest["prev"] = boot.hash
    report = verify_chain([boot, late])
    assert any("out of order" in p.reason for p in report.problems)


# -- section 4.2/4.3: record placement ---------------------------------------------------------


def _move_first_checkpoint(to: int) -> Any:
    def change(recs: Records) -> Records:
        i = next(i for i, (t, _) in enumerate(recs) if t == REC_CHECKPOINT)
        cp = recs.pop(i)
        recs.insert(to if to >= 0 else len(recs), cp)
        return recs

    return change


def test_a_checkpoint_before_the_header_is_a_problem(tmp_path: Path) -> None:
    b = ChainBuilder(tmp_path / "segments")
    path = reseal(b.segment(), b.signer, records=_move_first_checkpoint(0))
    assert any("checkpoint before the header" in r for r in _reasons(_verify(b), path.name))


def test_a_checkpoint_after_the_final_chunk_of_a_sealed_segment_is_a_problem(tmp_path: Path) -> None:
    b = ChainBuilder(tmp_path / "segments")
    path = reseal(b.segment(), b.signer, records=_move_first_checkpoint(-1))
    assert any("checkpoint after the final chunk" in r for r in _reasons(_verify(b), path.name))


def test_a_segment_without_data_chunks_is_a_problem(tmp_path: Path) -> None:
    b = ChainBuilder(tmp_path / "segments")
    path = reseal(b.segment(), b.signer, records=lambda recs: [r for r in recs if r[0] != REC_DATA])
    assert "segment has no data chunk" in _reasons(_verify(b), path.name)


def test_a_segment_manifest_without_a_checkpoint_count_is_a_problem(tmp_path: Path) -> None:
    b = ChainBuilder(tmp_path / "segments")

    def drop(m: dict[str, Any]) -> dict[str, Any]:
        del m["ciphertext"]["checkpoints"]
        return m

    path = reseal(b.segment(), b.signer, manifest=drop)
    assert any("ciphertext.checkpoints: missing" in r for r in _reasons(_verify(b), path.name))


# -- section 5.1: exactly these header members -------------------------------------------------


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (_set("comment", "hello"), "header has unknown member(s) comment"),
        (_drop("hq_key"), "header lacks hq_key"),
        (_set("format", True), "header format True is not supported"),
        (_set("started", {"mono_ns": "0"}), "header started is neither"),
        (_set("hq_key", "AB" * 32), "header hq_key is not a SHA-256 fingerprint"),
    ],
)
def test_header_members_are_exactly_the_documented_ones(tmp_path: Path, change: Any, reason: str) -> None:
    b = ChainBuilder(tmp_path / "segments")
    path = reseal(b.segment(), b.signer, header=change)
    assert any(reason in r for r in _reasons(_verify(b), path.name)), _reasons(_verify(b))


def test_a_header_without_started_from_an_early_build_is_a_warning(tmp_path: Path) -> None:
    b = ChainBuilder(tmp_path / "segments")
    reseal(b.segment(), b.signer, header=_drop("started"))
    report = _verify(b)
    assert report.ok, report.problems
    assert any("header lacks started (written by an early 0.1.0 build)" in w.reason for w in report.warnings)


# -- section 3: strict base64 ------------------------------------------------------------------


def _nonzero_padding_bits(text: str) -> str:
    """The same bytes in base64 whose unused low bits before '=' are not zero."""
    assert text.endswith("=")
    i = len(text.rstrip("=")) - 1
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    return text[:i] + alphabet[alphabet.index(text[i]) | 1] + text[i + 1 :]


def test_strict_base64_means_canonical_rfc4648() -> None:
    assert b64decode_strict("AAE=") == b"\x00\x01"
    for bad in ("AAF=", "AAE", "AA E=", "AAE=\n", "AA-_", "AAE==", "A==="):
        with pytest.raises(ValueError):
            b64decode_strict(bad)
    assert base64.b64decode("AAF=") == b"\x00\x01"  # what a lax decoder accepts


def test_a_wrapped_key_with_nonzero_padding_bits_is_a_problem(tmp_path: Path) -> None:
    b = ChainBuilder(tmp_path / "segments")
    path = b.segment()
    reseal(path, b.signer, header=lambda h: _set("enc", _nonzero_padding_bits(h["enc"]))(h))
    assert any("header enc is not the strict base64" in r for r in _reasons(_verify(b), path.name))


def test_sealed_metadata_with_nonzero_padding_bits_is_a_problem(tmp_path: Path) -> None:
    b = ChainBuilder(tmp_path / "segments")
    path = b.segment()
    reseal(path, b.signer, manifest=lambda m: _set("sealed", _nonzero_padding_bits(m["sealed"]))(m))
    assert any("sealed: not a non-empty strict base64" in r for r in _reasons(_verify(b), path.name))


# -- section 8.2: time.source and the optional time members ------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("source", "sundial", "time.source: unknown source 'sundial'"),
        ("uncertainty_ns", "10 ms", "time.uncertainty_ns: expected int or null"),
        ("gnss_offset_ns", None, "time.gnss_offset_ns: expected int"),
    ],
)
def test_time_members_are_checked(tmp_path: Path, key: str, value: Any, reason: str) -> None:
    b = ChainBuilder(tmp_path / "segments")
    path = reseal(b.event("boot"), b.signer, manifest=lambda m: (m["time"].update({key: value}), m)[1])
    assert any(reason in r for r in _reasons(_verify(b), path.name))


# -- section 9: which files are read, in which order -------------------------------------------


def test_a_directory_or_dangling_link_named_bcs_is_a_problem(tmp_path: Path) -> None:
    b = ChainBuilder(tmp_path / "segments")
    b.incident(segments=1)
    (b.folder / "0000000009.bcs").mkdir()
    (b.folder / "0000000010.bcs").symlink_to(b.folder / "gone")
    os.mkfifo(b.folder / "0000000011.bcs")
    report = _verify(b)
    assert _reasons(report, "0000000009.bcs") == ["is a directory, not an evidence file"]
    assert _reasons(report, "0000000010.bcs") == ["is a symbolic link to nothing (dangling), not an evidence file"]
    assert "not a regular file" in _reasons(report, "0000000011.bcs")[0]
    one = verify_path(b.folder / "0000000011.bcs", b.signer.public_key())  # given alone, not read as a folder
    assert "not a regular file" in _reasons(one, "0000000011.bcs")[0]


def test_the_file_named_after_its_seq_is_kept_and_the_copy_reported(tmp_path: Path) -> None:
    b = ChainBuilder(tmp_path / "segments")
    paths = b.incident(segments=1)
    copy = b.folder / "0000000002-copy.bcs"
    copy.write_bytes(paths[2].read_bytes())
    report = _verify(b)
    dup = [p for p in report.problems if "duplicate of" in p.reason]
    assert [(p.name, p.reason) for p in dup] == [(copy.name, "duplicate of 0000000002.bcs (same entry twice)")]


# -- section 9.3 K5: what a decoding error is --------------------------------------------------


@pytest.mark.parametrize("codec", ["h264", "ffv1"])
def test_concealed_decoding_errors_are_a_problem(tmp_path: Path, codec: str) -> None:
    """FFmpeg conceals a broken H.264 picture or FFV1 slice and still counts the frame."""
    b = ChainBuilder(tmp_path / "segments")
    frames = 30 if codec == "h264" else 10
    fields = {
        "container": "matroska",
        "tracks": [{"name": "chest", "kind": "video", "codec": codec, "frames": frames, "dropped": 0}],
    }
    good = matroska(codec, frames)
    b.segment(good, fields=fields)
    assert _verify(b, hq=True).ok
    damaged = good
    if codec == "h264":  # the last 70 % of P pictures 1..8 garbled
        for i in range(1, 9):
            damaged = damage_packet(damaged, i, start=0.3)
    else:  # one bit of one slice flipped: only its CRC tells
        damaged = damage_packet(good, 3, start=0.5, length=1, xor=0x01)
    bad = b.segment(damaged, fields=fields)
    assert any("media does not decode" in r for r in _reasons(_verify(b, hq=True), bad.name))


# -- section 6.3 / 9.3 K3: a recovered segment cut after its final chunk -----------------------


def test_a_recovered_segment_cut_after_its_final_chunk_verifies_with_the_content_key(tmp_path: Path) -> None:
    b = ChainBuilder(tmp_path / "segments")
    b.event("boot")
    b.salvaged(["recovered", "clock-unsynced"], cut_after_final=True)
    b.salvaged(["recovered", "clock-unsynced"])
    report = verify_path(b.folder, b.signer.public_key(), hq_key=b.hq_key)  # not Matroska: no decode
    assert report.ok, report.problems


def test_a_recovered_segment_with_a_final_chunk_before_its_last_is_a_problem(tmp_path: Path) -> None:
    b = ChainBuilder(tmp_path / "segments")
    b.event("boot")
    path = b.salvaged(["recovered", "clock-unsynced"], cut_after_final=True)

    def append_chunk(recs: Records) -> Records:  # a copy of the final chunk after it
        return [*recs, next(r for r in reversed(recs) if r[0] == REC_DATA)]

    reseal(path, b.signer, records=append_chunk)
    assert _verify(b).ok  # public material cannot tell
    report = verify_path(b.folder, b.signer.public_key(), hq_key=b.hq_key)
    assert any("fails authentication" in r for r in _reasons(report))


# -- section 3: integers are exact -------------------------------------------------------------


def test_integers_beyond_2_to_53_are_written_and_read_exactly() -> None:
    n = 1_790_000_001_000_000_001  # a UTC nanosecond time; no IEEE-754 double holds it
    assert float(n) != n
    assert canonical.dumps({"t": n}) == b'{"t":1790000001000000001}'
    assert canonical.loads(b'{"t":1790000001000000001}')["t"] == n
    assert canonical.loads(b"9223372036854775807") == 2**63 - 1
    for text in (b"9223372036854775808", b"1.790000001e18", b"1790000001000000001.0", b"-0"):
        with pytest.raises(canonical.CanonicalError):
            canonical.loads(text)


def test_a_manifest_reserialized_through_doubles_no_longer_verifies(tmp_path: Path) -> None:
    """What a stock RFC 8785 encoder does to a timestamp breaks the signature: the text is normative."""
    b = ChainBuilder(tmp_path / "segments")
    path = reseal(b.event("boot"), b.signer, manifest=lambda m: (m["time"].update(utc_start_ns=2**60 + 1), m)[1])
    assert _verify(b).ok
    data = path.read_bytes()
    exact = b'"utc_start_ns":1152921504606846977'
    assert exact in data
    rounded = b'"utc_start_ns":%d' % int(float(2**60 + 1))
    path.write_bytes(data.replace(exact, rounded))
    assert any("signature does not verify" in r for r in _reasons(_verify(b)))


# -- what an OK result says ----------------------------------------------------------------------


def _run_verify(b: ChainBuilder, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    pub = b.write_device_pub(tmp_path / "device.pub")
    args = argparse.Namespace(path=b.folder, device_pub=pub, hq_key=None, device_id=None, json=False)
    assert verify_cmd(args) == 0
    return capsys.readouterr().out


def test_ok_without_a_final_shutdown_does_not_claim_the_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    b = ChainBuilder(tmp_path / "segments")
    b.event("boot")
    b.segment()
    out = _run_verify(b, tmp_path, capsys)
    assert "complete" not in out
    assert "no entry is missing or out of order from seq 0 to seq 1 (which is the chain's start)" in out
    assert "the end is NOT proven: entries after seq 1 may exist" in out


def test_ok_with_a_final_shutdown_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    b = ChainBuilder(tmp_path / "segments")
    b.incident(segments=1)
    for name in ("0000000000.bcs", "0000000001.bcs"):
        (b.folder / name).unlink()
    out = _run_verify(b, tmp_path, capsys)
    assert "from seq 2 to seq 4 (entries before seq 2 are not in the set); the set ends with a clean shutdown" in out
    args = argparse.Namespace(path=b.folder, device_pub=tmp_path / "device.pub", hq_key=None, device_id=None, json=True)
    verify_cmd(args)
    doc = json.loads(capsys.readouterr().out)
    assert (doc["start_proven"], doc["end_proven"]) == (False, True)



# -- section 12.3: the document's own test vector ------------------------------------------------


def test_the_documents_test_vector_verifies_as_the_document_says(tmp_path: Path) -> None:
    doc = (Path(__file__).parents[2] / "docs" / "evidence-format.md").read_text()
    pub = re.search(r"(-----BEGIN PUBLIC KEY-----\n.*?\n-----END PUBLIC KEY-----)", doc, re.S)
    hq = re.search(r"(-----BEGIN PRIVATE KEY-----\n.*?\n-----END PRIVATE KEY-----)", doc, re.S)
    assert pub is not None and hq is not None
    (tmp_path / "device.pub").write_text(pub.group(1) + "\n")
    (tmp_path / "hq.key").write_text(hq.group(1) + "\n")
    (tmp_path / "hq.key").chmod(0o600)
    folder = tmp_path / "segments"
    folder.mkdir()
    for name in ("0000000000.bcs", "0000000001.bcs"):
        block = re.search(re.escape(f"`{name}`, base64:") + r"\n\n```\n(.*?)```", doc, re.S)
        assert block is not None
        (folder / name).write_bytes(base64.b64decode(block.group(1)))
    device_pub, hq_key = load_device_public(tmp_path / "device.pub"), load_hq_private(tmp_path / "hq.key")
    report = verify_path(folder, device_pub, hq_key=hq_key, decode=check_media)
    assert report.ok, report.problems
    assert [w.reason for w in report.warnings] == [
        "chain ends without a clean shutdown event: later entries may be missing, "
        "the unit may still be running, or it lost power"
    ]
    assert f"RESULT: OK - every signature, hash and link holds; {proven(report)}\n" in doc
