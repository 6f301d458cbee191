"""A case's court export end to end: entries ingested for real (receipts, custody ledger), a case
holding one recording, ``bodycam-hq export --case`` with an RFC 3161 time stamp from a real TSA on
loopback (OpenSSL's, tests/tsa_util.py), then ``bodycam verify`` offline, ``openssl ts -verify``
on the token, and tampered copies that fail naming why."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.cli import main as bodycam
from agent.evidence.keys import fingerprint, load_receipt_private, public_der, public_pem
from hq.app import lifecycle_service
from hq.audit import Auditor
from hq.cli import main as hq
from hq.index import SqliteIndex
from hq.ingest import Ingestor
from hq.records import Upload
from hq.storage import FileEvidenceStore, UploadArea
from tests.evidence_util import ChainBuilder
from tests.tsa_util import Tsa, running_tsa

REC = "0b6f1c5e-4f3a-4d2b-9a7e-5c1d2e3f4a5b"
OTHER = "9d1e2f3a-0000-4000-8000-000000000002"


@pytest.fixture
def tsa(tmp_path: Path) -> Iterator[Tsa]:
    with running_tsa(tmp_path / "tsa") as running:
        yield running


def headquarters_with_a_recording(tmp_path: Path) -> Path:
    data = tmp_path / "H"
    assert hq(["keygen", "--data-dir", str(data)]) == 0
    with SqliteIndex(data / "index.sqlite") as index:
        store, uploads = FileEvidenceStore(data), UploadArea(data)
        lc = lifecycle_service(index, store)
        ingestor = Ingestor(index, store, uploads, load_receipt_private(data / "keys" / "receipt.key"),
                            Auditor(index, "hq-ingest", lambda: 0), lambda: 1_790_000_000_000_000_000,
                            custody=lc.custody)
        unit = ChainBuilder(tmp_path / "unit", device_id="unit-7", recording_id=REC)
        pub = unit.signer.public_key()
        index.enroll("unit-7", public_pem(pub).decode(), fingerprint(public_der(pub)), 0)
        paths = [unit.event("record-start", {"by": "input:record", "trigger": "button", "recording_id": REC}),
                 unit.segment(), unit.segment()]
        unit.recording_id = OTHER
        paths.append(unit.segment())
        for seq, path in enumerate(paths):
            data_bytes = path.read_bytes()
            upload = Upload(f"{seq + 1:032x}", "unit-7", seq, path.name, hashlib.sha256(data_bytes).hexdigest(),
                            len(data_bytes), "receiving", 0, 0)
            index.add_upload(upload)
            shutil.copyfile(path, uploads.path(upload.upload_id))
            assert ingestor.ingest(upload).action == "store"
    return data


def test_a_case_exports_verifies_offline_and_tampering_is_named(
        tmp_path: Path, tsa: Tsa, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(headquarters_with_a_recording(tmp_path))
    out = tmp_path / "court"
    assert hq(["case", "open", "2026-0042", "--title", "assault, Elm St", "--data-dir", data]) == 0
    assert hq(["case", "add", "2026-0042", "--device-id", "unit-7", "--recording", REC, "--data-dir", data]) == 0
    capsys.readouterr()
    assert hq(["export", "--case", "2026-0042", "--out", str(out), "--tsa-url", tsa.url, "--no-viewing-copies",
               "--tsa-ca", str(tsa.ca_pem), "--data-dir", data]) == 0  # the viewing copies: test_viewing_copies
    assert "manifest time-stamped" in capsys.readouterr().out
    manifest = json.loads((out / "case.json").read_text())
    assert [r["recording_id"] for r in manifest["recordings"]] == [REC]
    assert sorted(p.name for p in (out / "unit-7").glob("*.bcs")) == [
        "0000000000.bcs", "0000000001.bcs", "0000000002.bcs"]  # seq 3 is another recording: not in the case
    custody = json.loads((out / "custody.json").read_text())["records"]
    assert [r["event_type"] for r in custody] == ["ingest", "receipt"] * 3 + ["hold", "export"]
    assert len(tsa.requests) == 1

    # the token verifies with OpenSSL's own verifier, against the TSA's root
    done = subprocess.run(["openssl", "ts", "-verify", "-data", str(out / "case.json"), "-in",
                           str(out / "case.json.tsr"), "-CAfile", str(tsa.ca_pem), "-untrusted", str(tsa.tsa_pem)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "Verification: OK" in done.stdout, done.stderr

    capsys.readouterr()
    assert bodycam(["verify", str(out)]) == 0
    said = capsys.readouterr().out
    assert "RESULT: OK" in said and "time stamp: the manifest existed at" in said and "custody: 8 record(s)" in said

    def fails_naming(tamper: str, edit: object, reason: str) -> None:
        copy = tmp_path / tamper
        shutil.copytree(out, copy)
        edit(copy)  # type: ignore[operator]
        capsys.readouterr()
        assert bodycam(["verify", str(copy)]) == 1
        text = capsys.readouterr().out
        assert "RESULT: FAILED" in text and reason in text, text

    def flip_segment_byte(copy: Path) -> None:
        seg = copy / "unit-7" / "0000000001.bcs"
        raw = bytearray(seg.read_bytes())
        raw[len(raw) // 2] ^= 1
        seg.write_bytes(bytes(raw))

    def add_file(copy: Path) -> None:
        shutil.copyfile(copy / "unit-7" / "0000000001.bcs", copy / "unit-7" / "0000000009.bcs")

    def edit_custody(copy: Path) -> None:
        doc = json.loads((copy / "custody.json").read_text())
        doc["records"][0]["actor"] = "someone-else"
        (copy / "custody.json").write_text(json.dumps(doc))

    def edit_manifest(copy: Path) -> None:
        doc = json.loads((copy / "case.json").read_text())
        doc["exported_by"] = "someone-else"
        (copy / "case.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")

    def drop_token(copy: Path) -> None:
        (copy / "case.json.tsr").unlink()

    fails_naming("seg", flip_segment_byte, "unit-7/0000000001.bcs: its SHA-256 is not the one case.json lists")
    fails_naming("added", add_file, "0000000009.bcs: not listed in case.json")
    fails_naming("custody", edit_custody, "custody record")
    fails_naming("manifest", edit_manifest, "case.json.tsr: the time-stamp token does not verify")
    fails_naming("token", drop_token, "the token is missing")
    # a root other than the authority's is refused
    other = tmp_path / "other-tsa"
    with running_tsa(other):
        capsys.readouterr()
        assert bodycam(["verify", str(out), "--tsa-ca", str(other / "ca.pem")]) == 1
        assert "case.json.tsr" in capsys.readouterr().out


def test_a_case_export_refuses_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(headquarters_with_a_recording(tmp_path))
    capsys.readouterr()
    assert hq(["export", "--case", "nope", "--out", str(tmp_path / "o"), "--data-dir", data]) == 1
    assert "no case 'nope'" in capsys.readouterr().err
    assert hq(["case", "open", "2026-1", "--title", "t", "--data-dir", data]) == 0
    capsys.readouterr()
    assert hq(["export", "--case", "2026-1", "--out", str(tmp_path / "o"), "--data-dir", data,
               "--tsa-url", "http://127.0.0.1:9/none"]) == 1
    assert "holds no recording" in capsys.readouterr().err
    assert hq(["export", "--out", str(tmp_path / "o"), "--data-dir", data]) == 2
    assert "--device-id UNIT" in capsys.readouterr().err
