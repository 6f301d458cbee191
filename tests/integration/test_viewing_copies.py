"""A case export's viewing copies and their C2PA content credentials end to end: a real
recording (H.264 camera, FFV1 thermal, Opus audio) sealed to headquarters' key and ingested,
``bodycam-hq export --case`` decrypting with ``hq.key``, ffprobe reading the MP4s (time code
track, metadata, every frame), ``bodycam verify`` proving offline that the copy's packets are the
unit's, the C2PA reader validating each MP4, and tampered copies (one H.264 packet changed, a
frame dropped, slowed down, another time code, the credentials stripped) failing with the reason
even when case.json is rewritten to match; the same through decryptd, and from PostgreSQL and a
real S3 bucket under Object Lock."""

from __future__ import annotations

import datetime
import hashlib
import json
import shutil
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import c2pa
import pytest
from cryptography.hazmat.primitives import serialization

from agent.cli import main as bodycam
from agent.evidence.format import RECOVERED_FLAGS
from agent.evidence.keys import (
    fingerprint,
    generate_hq_key,
    load_hq_private,
    load_receipt_private,
    public_der,
    public_pem,
)
from agent.evidence.viewcopy import demux
from hq.app import lifecycle_service
from hq.audit import Auditor
from hq.case_export import export_case
from hq.cli import main as hq_main
from hq.credentials import ensure_credentials
from hq.index import SqlIndex, SqliteIndex
from hq.ingest import Ingestor
from hq.keygen import make_ca
from hq.records import Upload
from hq.s3store import S3EvidenceStore, connect
from hq.storage import FileEvidenceStore, UploadArea
from hq.storeurl import parse_store_url
from hq.viewing_copy import KeyDecrypter
from tests.case_export_util import export_a_recording, export_case_of, held_recording
from tests.evidence_util import ChainBuilder, matroska
from tests.playback_daemon import DecryptDaemon
from tests.playback_util import FPS, record
from tests.playback_util import ingest as ingest_recording
from tests.s3_util import S3Server, fresh_bucket

SECONDS = 5.0


def ffprobe(path: Path) -> dict[str, Any]:
    done = subprocess.run(["ffprobe", "-v", "error", "-count_packets", "-show_streams", "-show_format", "-of", "json",
                           str(path)], capture_output=True, text=True, check=True)
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


@pytest.fixture
def exported(tmp_path: Path) -> tuple[Path, str]:
    out, stem, said = export_a_recording(tmp_path, SECONDS)
    assert "viewing copies: 1 recording(s)" in said
    return out, stem


def test_the_viewing_copy_is_the_recorded_h264_with_time_codes(exported: tuple[Path, str]) -> None:
    out, stem = exported
    assert stat.S_IMODE(out.stat().st_mode) == 0o700  # decrypted footage: the exporting user's alone
    # the C2PA reference reader validates each MP4 on its own, under headquarters' export root
    root = (out / "credentials" / "export-ca.pem").read_text()
    context = c2pa.Context.from_dict({"verify": {"verify_trust": True}, "trust": {"trust_anchors": root}})
    for name in (f"{stem}.mp4", f"{stem}.thermal.mp4"):
        with (out / name).open("rb") as fh, c2pa.Reader("video/mp4", fh, context=context) as reader:
            assert reader.get_validation_state() == "Trusted", reader.get_validation_results()
            manifest = reader.get_active_manifest()
        assert manifest is not None
        evidence = next(a["data"] for a in manifest["assertions"] if a["label"] == "org.bodycam.evidence")
        record = json.loads((out / f"{stem}.json").read_text())
        bound = [s["manifest_sha256"] for s in evidence["segments"]]
        assert bound == [s["manifest_sha256"] for s in record["segments"]]
        assert all(s["receipt"] and s["unit_signature"] for s in evidence["segments"])
    doc = ffprobe(out / f"{stem}.mp4")
    kinds = {s["codec_type"]: s for s in doc["streams"]}
    assert kinds["video"]["codec_name"] == "h264" and kinds["audio"]["codec_name"] == "opus"
    assert kinds["data"]["codec_tag_string"] == "tmcd" and kinds["data"]["tags"]["timecode"].startswith("10:00:00")
    assert int(kinds["video"]["nb_read_packets"]) == SECONDS * FPS
    tags = doc["format"]["tags"]
    assert tags["creation_time"].startswith("2024-05-14T10:00:00") and tags["com.bodycam.clock_source"] == "ntp"
    assert "com.bodycam.clock_gnss_offset_ns" in tags
    record = json.loads((out / f"{stem}.json").read_text())
    assert record["camera_packets"] == SECONDS * FPS and len(record["segments"]) == 3
    colour = ffprobe(out / f"{stem}.thermal.mp4")["streams"][0]
    assert colour["codec_name"] == "h264" and int(colour["nb_read_packets"]) == SECONDS * FPS
    lossless = ffprobe(out / f"{stem}.thermal.mkv")["streams"][0]
    assert lossless["codec_name"] == "ffv1" and lossless["pix_fmt"] == "gray16le"
    # every viewing file decodes to the end
    for name in (f"{stem}.mp4", f"{stem}.thermal.mp4", f"{stem}.thermal.mkv"):
        done = subprocess.run(["ffmpeg", "-v", "error", "-i", str(out / name), "-f", "null", "-"],
                              capture_output=True, text=True, check=False)
        assert done.returncode == 0 and not done.stderr, done.stderr


def _rehash(copy: Path, rel: str) -> None:
    """Rewrite case.json's SHA-256 of ``rel`` (a forger without the time stamp's key could)."""
    doc = json.loads((copy / "case.json").read_text())
    doc["files"][rel] = hashlib.sha256((copy / rel).read_bytes()).hexdigest()
    (copy / "case.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def _change_a_packet(mp4: Path) -> None:
    track = demux(mp4, "camera")
    assert track is not None
    raw = bytearray(mp4.read_bytes())
    target, at = track.packets[27], track.positions[27]
    assert raw[at:at + len(target)] == target
    raw[at + len(target) // 2] ^= 0x01
    mp4.write_bytes(bytes(raw))


def _drop_a_frame(mp4: Path) -> None:
    _remux(mp4, drop=48)  # a frame near the end (no frame after it refers to it)


def _strip_credentials(mp4: Path) -> None:
    _remux(mp4, drop=None)  # every packet kept: only the C2PA manifest store goes


def _slow_down(mp4: Path) -> None:
    _remux(mp4, drop=None, stretch_from=30)  # from the 31st frame on, shown later and slower


def _another_time_code(mp4: Path) -> None:
    _remux(mp4, drop=None, timecode="09:59:00:00")


def _remux(mp4: Path, drop: int | None, stretch_from: int | None = None, timecode: str = "10:00:00:00") -> None:
    copy = mp4.with_name("tmp.mp4")
    with av.open(str(mp4)) as src, av.open(str(copy), "w", format="mp4", options={"write_tmcd": "1"}) as dst:
        dst.metadata["creation_time"] = src.metadata["creation_time"]
        v, a = src.streams.video[0], src.streams.audio[0]
        ov, oa = dst.add_stream_from_template(v), dst.add_stream_from_template(a)
        ov.metadata["timecode"] = timecode
        n = 0
        for p in src.demux(v, a):
            if p.size == 0:
                continue
            if p.stream is v:
                n += 1
                if n == drop:
                    continue
                if stretch_from is not None and n > stretch_from and p.pts is not None and p.dts is not None:
                    p.pts, p.dts = p.pts * 2, p.dts * 2
            p.stream = ov if p.stream is v else oa
            dst.mux(p)
    copy.replace(mp4)


def test_verify_proves_the_copy_and_names_tampering(exported: tuple[Path, str], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out, stem = exported
    capsys.readouterr()
    assert bodycam(["verify", str(out)]) == 0
    said = capsys.readouterr().out
    assert f"{stem}.mp4: its 50 H.264 packets are the unit's, byte for byte and in order" in said, said
    assert "content credentials: 2 MP4(s) validated by the C2PA reader" in said and "RESULT: OK" in said
    assert bodycam(["verify", str(out), "--json"]) == 0  # the same findings for tools
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is True and doc["problems"] == [] and doc["devices"]["unit-p1"]["ok"] is True
    assert any("H.264 packets are the unit's" in n for n in doc["notes"])
    # an expert trusting only another root is told the credentials do not chain to it
    other = tmp_path / "other-ca.pem"
    other.write_bytes(make_ca(datetime.datetime.now(datetime.UTC), "someone else")[1].public_bytes(
        serialization.Encoding.PEM))
    capsys.readouterr()
    assert bodycam(["verify", str(out), "--c2pa-ca", str(other)]) == 1
    assert "C2PA validation says Valid (signingCredential.untrusted" in capsys.readouterr().out

    def fails_naming(name: str, edit: Callable[[Path], None], rel: str, reason: str) -> None:
        copy = tmp_path / name
        shutil.copytree(out, copy)
        edit(copy / rel)
        _rehash(copy, rel)
        capsys.readouterr()
        assert bodycam(["verify", str(copy)]) == 1
        text = capsys.readouterr().out
        assert "RESULT: FAILED" in text and reason in text, text

    fails_naming("changed", _change_a_packet, f"{stem}.mp4", "H.264 packets 20..39 (seq 3): not the packets the "
                 "unit signed (a packet changed)")
    fails_naming("dropped", _drop_a_frame, f"{stem}.mp4", "holds 49 H.264 packets, the unit recorded 50 "
                 "(a frame dropped or added)")

    def change_thermal(mkv: Path) -> None:
        track = demux(mkv, "thermal")
        assert track is not None
        raw = bytearray(mkv.read_bytes())
        at = raw.find(track.packets[5], track.positions[5])
        raw[at + len(track.packets[5]) - 3] ^= 0x10
        mkv.write_bytes(bytes(raw))

    fails_naming("slowed", _slow_down, f"{stem}.mp4", "(seq 3): packet 30 is shown at 6000 ms, the unit recorded it "
                 "at 3000 ms")
    fails_naming("time code", _another_time_code, f"{stem}.mp4", "its time code 09:59:00:0")
    fails_naming("stripped", _strip_credentials, f"{stem}.mp4", f"{stem}.mp4: no C2PA content credentials (removed)")
    fails_naming("thermal", change_thermal, f"{stem}.thermal.mkv", "the thermal track: packet 5 is not the recorded")


def test_the_export_decrypts_through_the_decrypt_component(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A service host without hq.key: the viewing copies are made through bodycam-hq decryptd."""
    data, rec = held_recording(tmp_path, 2.0)
    vault = tmp_path / "vault"
    vault.mkdir(mode=0o700)
    (data / "keys" / "hq.key").rename(vault / "hq.key")
    run = tmp_path / "run"
    run.mkdir(mode=0o750)
    daemon = DecryptDaemon(vault / "hq.key", run / "decryptd.sock")
    try:
        out, stem, said = export_case_of(data, rec, tmp_path / "court", "--decrypt-socket", str(daemon.socket))
    finally:
        assert daemon.stop() == 0
    assert "viewing copies: 1 recording(s)" in said
    assert b"decrypted" in daemon.log.read_bytes()
    capsys.readouterr()
    assert bodycam(["verify", str(out)]) == 0
    assert f"{stem}.mp4: its 20 H.264 packets are the unit's" in capsys.readouterr().out
    # without the key and without the component: the originals only, and the export says so
    _, _, said = export_case_of(data, rec, tmp_path / "originals")
    assert "no viewing copies: give --decrypt-socket" in said
    assert json.loads((tmp_path / "originals" / "case.json").read_text())["viewing_copies"] is None


def test_a_fleet_headquarters_exports_viewing_copies_from_s3(db_url: str, s3_server: S3Server, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """The same export from the fleet's stores: the index on each engine (a real PostgreSQL too),
    the segments in a real S3 bucket under Object Lock."""
    keys = tmp_path / "keys"
    keys.mkdir()
    generate_hq_key(keys / "hq.key", keys / "hq.pub")
    rec = record(tmp_path / "unit", seconds=2.0, hq_key=load_hq_private(keys / "hq.key"))  # type: ignore[arg-type]
    config = parse_store_url(s3_server.store_url(fresh_bucket(), retention_days=1))
    store = S3EvidenceStore(connect(config, s3_server.session()), config, time.time_ns)
    store.prepare()
    out = tmp_path / "court"
    with SqlIndex.open(db_url, auto_migrate=True) as index:
        ingest_recording(index, store, tmp_path / "hq", rec, time.time_ns())
        lc = lifecycle_service(index, store)
        lc.open_case("sgt", "2026-9", "fleet")
        lc.add_to_case("sgt", "2026-9", rec.device_id, rec.recording_id)
        result = export_case(lc, index, store, "2026-9", out, hq_pub=keys / "hq.pub", exported_by="sgt",
                             now_ns=time.time_ns(), decrypter=KeyDecrypter(load_hq_private(keys / "hq.key")),
                             signer=ensure_credentials(keys, datetime.datetime.now(datetime.UTC)))
    assert result.viewing_copies == 1
    capsys.readouterr()
    assert bodycam(["verify", str(out)]) == 0
    said = capsys.readouterr().out
    assert "its 20 H.264 packets are the unit's" in said and "2 MP4(s) validated by the C2PA reader" in said, said


def test_a_segment_salvaged_after_a_power_loss_is_copied_and_said_to_rest_on_the_export(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The unit never knew a salvaged segment's plaintext: its packets are copied, checked against
    what headquarters decrypted, and the report says they rest on the export, not the unit."""
    data = tmp_path / "H"
    assert hq_main(["keygen", "--data-dir", str(data)]) == 0
    unit = ChainBuilder(tmp_path / "unit", device_id="unit-8", recording_id="r",
                        hq_key=load_hq_private(data / "keys" / "hq.key"))  # type: ignore[arg-type]
    tracks = {"container": "matroska", "tracks": [{"name": "chest", "kind": "video", "codec": "h264", "frames": 20,
                                                   "dropped": 0, "params": {"rate": "10/1"}}]}
    paths = [unit.segment(payload=matroska("h264", 20), fields=tracks),
             unit.salvaged(RECOVERED_FLAGS, payload=matroska("h264", 20))]
    with SqliteIndex(data / "index.sqlite") as index:
        pub = unit.signer.public_key()
        index.enroll("unit-8", public_pem(pub).decode(), fingerprint(public_der(pub)), 0)
        store, uploads = FileEvidenceStore(data), UploadArea(data)
        ingestor = Ingestor(index, store, uploads, load_receipt_private(data / "keys" / "receipt.key"),
                            Auditor(index, "hq-ingest", lambda: 0), time.time_ns)
        for seq, path in enumerate(paths):
            raw = path.read_bytes()
            upload = Upload(f"{seq + 1:032x}", "unit-8", seq, path.name, hashlib.sha256(raw).hexdigest(), len(raw),
                            "receiving", 0, 0)
            index.add_upload(upload)
            shutil.copyfile(path, uploads.path(upload.upload_id))
            assert ingestor.ingest(upload).action == "store"
    assert hq_main(["case", "open", "2026-8", "--title", "t", "--data-dir", str(data)]) == 0
    assert hq_main(["case", "add", "2026-8", "--device-id", "unit-8", "--recording", "r", "--data-dir", str(data)]) == 0
    out = tmp_path / "court"
    assert hq_main(["export", "--case", "2026-8", "--out", str(out), "--data-dir", str(data)]) == 0
    capsys.readouterr()
    assert bodycam(["verify", str(out)]) == 0
    said = capsys.readouterr().out
    assert "unit-8/viewing/r.mp4: its 40 H.264 packets are the unit's" in said, said
    assert "seq [1] were salvaged after a power loss" in said, said
