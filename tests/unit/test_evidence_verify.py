"""Writing segments and verifying files and chains: every defect is named with its file and reason."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.evidence.decrypt import open_metadata, open_segment
from agent.evidence.manifest import parse_manifest_record
from agent.evidence.segment import scan
from agent.evidence.verify import Report, verify_path
from tests.evidence_util import ChainBuilder


def verify(folder: Path, b: ChainBuilder, with_hq: bool = False) -> Report:
    return verify_path(folder, b.signer.public_key(), hq_key=b.hq_key if with_hq else None)


def reasons(report: Report) -> str:
    return "\n".join(f"{p.name}: {p.reason}" for p in report.problems)


@pytest.fixture
def chain(tmp_path: Path) -> tuple[ChainBuilder, list[Path]]:
    b = ChainBuilder(tmp_path / "segments")
    return b, b.incident(segments=3)


def test_clean_chain_verifies_publicly_and_with_hq_key(chain: tuple[ChainBuilder, list[Path]]) -> None:
    b, paths = chain
    for with_hq in (False, True):
        r = verify(b.folder, b, with_hq)
        assert r.ok, reasons(r)
        assert (r.segments, r.events, r.first_seq, r.last_seq) == (3, 4, 0, 6)
        assert r.clean_end and not r.warnings
        assert r.footage_ns == 3 * 2_000_000_000


def test_decrypt_round_trip_and_sealed_metadata(tmp_path: Path) -> None:
    b = ChainBuilder(tmp_path)
    payload = bytes(range(256)) * 1000
    path = b.segment(payload, checkpoints=3)
    parts: list[bytes] = []
    opened = open_segment(path, b.hq_key, parts.append)
    assert b"".join(parts) == payload and not opened.problems
    with path.open("rb") as fh:
        s = scan(fh)
    assert s.manifest_record is not None
    signed = parse_manifest_record(s.manifest_record)
    assert open_metadata(signed, b.hq_key) == {"gnss": [{"lat_e7": 515000000, "lon_e7": -1200000}]}
    # nothing that reveals place is readable without headquarters' key
    assert b"515000000" not in path.read_bytes()


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def test_flipped_ciphertext_byte_is_named(chain: tuple[ChainBuilder, list[Path]]) -> None:
    b, paths = chain
    flip(paths[3], 2000)
    r = verify(b.folder, b)
    assert not r.ok
    assert any(p.name == paths[3].name and "ciphertext SHA-256" in p.reason for p in r.problems), reasons(r)


def test_flipped_byte_caught_by_gcm_with_hq_key(chain: tuple[ChainBuilder, list[Path]]) -> None:
    b, paths = chain
    flip(paths[3], 2000)
    r = verify(b.folder, b, with_hq=True)
    assert any(p.name == paths[3].name for p in r.problems)


def test_deleted_segment_is_a_gap(chain: tuple[ChainBuilder, list[Path]]) -> None:
    b, paths = chain
    paths[3].unlink()
    r = verify(b.folder, b)
    assert any(p.seq == 4 and "entry 3 is missing" in p.reason for p in r.problems), reasons(r)


def test_swapped_file_names_are_still_ordered_by_seq(chain: tuple[ChainBuilder, list[Path]]) -> None:
    b, paths = chain
    tmp = paths[2].with_suffix(".tmp")
    paths[2].rename(tmp)
    paths[3].rename(paths[2])
    tmp.rename(paths[3])
    r = verify(b.folder, b)
    assert r.ok, reasons(r)  # order comes from the signed seq, not the file name...
    assert len([w for w in r.warnings if "renamed" in w.reason]) == 2  # ...and the renaming is reported


def test_replayed_segment_from_another_chain_is_refused(tmp_path: Path) -> None:
    b = ChainBuilder(tmp_path / "a")
    paths = b.incident(segments=3)
    # same device and key, a second run of the chain: its seq 3 is valid but links elsewhere
    other = ChainBuilder(tmp_path / "b", signer=b.signer, hq_key=b.hq_key)
    other_paths = other.incident(segments=3)
    shutil.copyfile(other_paths[3], paths[3])
    r = verify(b.folder, b)
    assert any(p.seq == 4 and "does not link" in p.reason for p in r.problems), reasons(r)


def test_duplicate_and_conflicting_entries(chain: tuple[ChainBuilder, list[Path]]) -> None:
    b, paths = chain
    shutil.copyfile(paths[3], b.folder / "copy.bcs")
    r = verify(b.folder, b)
    assert any("duplicate" in p.reason for p in r.problems), reasons(r)


def test_segment_of_another_device_is_refused(tmp_path: Path) -> None:
    b = ChainBuilder(tmp_path / "a")
    b.incident(segments=2)
    stranger = ChainBuilder(tmp_path / "b", signer=b.signer, device_id="unit-other")
    stranger.seq = 100
    path = stranger.event("boot")
    shutil.copyfile(path, b.folder / path.name)
    r = verify(b.folder, b)
    assert any("belongs to device 'unit-other'" in p.reason for p in r.problems), reasons(r)


def test_signature_by_another_key_is_refused(chain: tuple[ChainBuilder, list[Path]]) -> None:
    b, paths = chain
    impostor = ChainBuilder(b.folder.parent / "x", device_id=b.device_id)
    r = verify_path(b.folder, impostor.signer.public_key())
    assert sum("signature does not verify" in p.reason for p in r.problems) == len(paths)


def test_truncated_segment_is_named(chain: tuple[ChainBuilder, list[Path]]) -> None:
    b, paths = chain
    data = paths[2].read_bytes()
    paths[2].write_bytes(data[: len(data) // 2])
    r = verify(b.folder, b)
    assert any(p.name == paths[2].name and "truncated" in p.reason for p in r.problems), reasons(r)


def test_unexplained_footage_gap_is_a_problem_and_an_event_explains_it(tmp_path: Path) -> None:
    b = ChainBuilder(tmp_path / "a")
    b.event("boot")
    b.recording_id = "rec-1"
    b.event("record-start")
    b.segment()
    b.segment(gap_ns=500_000_000)
    r = verify(b.folder, b)
    assert any("0.500 s of footage missing" in p.reason for p in r.problems), reasons(r)

    c = ChainBuilder(tmp_path / "b")
    c.event("boot")
    c.recording_id = "rec-1"
    c.event("record-start")
    c.segment()
    c.event("sensor-fault", {"sensor": "camera.chest"})
    c.segment(gap_ns=500_000_000)
    assert verify(c.folder, c).ok


def test_missing_shutdown_is_a_warning_not_a_failure(tmp_path: Path) -> None:
    b = ChainBuilder(tmp_path)
    b.event("boot")
    b.segment()
    r = verify(b.folder, b)
    assert r.ok and not r.clean_end
    assert any("without a clean shutdown" in w.reason for w in r.warnings)


def test_restart_without_shutdown_is_reported(tmp_path: Path) -> None:
    b = ChainBuilder(tmp_path)
    b.event("boot")
    b.segment()
    b.boot_id = "second-boot"
    b.mono_ns = 5
    b.event("boot")
    b.event("shutdown")
    r = verify(b.folder, b)
    assert r.ok, reasons(r)
    assert any("restarted after seq 1 without a clean shutdown" in w.reason for w in r.warnings)


def test_new_boot_without_boot_event_is_a_problem(tmp_path: Path) -> None:
    b = ChainBuilder(tmp_path)
    b.event("boot")
    b.boot_id = "second-boot"
    b.event("record-start")
    r = verify(b.folder, b)
    assert any("without a boot event" in p.reason for p in r.problems)


def test_checkpoint_that_lies_is_caught(tmp_path: Path) -> None:
    b = ChainBuilder(tmp_path)
    path = b.segment(checkpoints=2)
    data = bytearray(path.read_bytes())
    idx = data.index(b'"chunks":')
    data[idx + 9] = ord("9")  # alter the claim: the signature no longer holds
    path.write_bytes(bytes(data))
    r = verify(b.folder, b)
    assert any("checkpoint" in p.reason or "SHA-256" in p.reason for p in r.problems)


def test_cli_verify_exit_codes_and_json(tmp_path: Path, chain: tuple[ChainBuilder, list[Path]]) -> None:
    b, paths = chain
    pub = b.write_device_pub(tmp_path / "device.pub")
    cmd = [sys.executable, "-m", "agent.cli", "verify", str(b.folder), "--device-pub", str(pub)]
    ok = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "RESULT: OK" in ok.stdout and "given on the command line" in ok.stdout
    flip(paths[4], 100)
    bad = subprocess.run(cmd + ["--json"], capture_output=True, text=True, check=False)
    assert bad.returncode == 1
    doc = json.loads(bad.stdout)
    assert not doc["ok"] and any(p["file"] == paths[4].name for p in doc["problems"])


def test_cli_falls_back_to_own_key_and_says_so(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    b = ChainBuilder(data_dir / "segments")
    b.incident(1)
    b.write_device_pub(data_dir / "device.pub")
    out = subprocess.run(
        [sys.executable, "-m", "agent.cli", "verify", str(data_dir)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "NOT given" in out.stdout


def test_event_writer_output_parses(tmp_path: Path) -> None:
    b = ChainBuilder(tmp_path)
    path = b.event("stealth-on", {"by": "button"})
    with path.open("rb") as fh:
        s = scan(fh)
    assert s.header is None and s.chunks == 0 and s.manifest_record is not None
    assert parse_manifest_record(s.manifest_record).manifest["detail"] == {"by": "button"}
    assert not s.problems
