"""Crafted and unusual files: the verifier names the problem instead of crashing; salvage edge cases."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest

from agent.evidence import canonical
from agent.evidence.decrypt import open_segment
from agent.evidence.format import MAGIC, REC_CHECKPOINT, REC_HEADER, REC_MANIFEST
from agent.evidence.manifest import ManifestError, check_manifest
from agent.evidence.segment import SegmentError, SegmentWriter
from agent.evidence.verify import verify_path
from tests.evidence_util import CONFIG_SHA, ChainBuilder, time_fields


@pytest.mark.parametrize("text", [b'{"a":"\\ud800"}', b"[" * 5000 + b"]" * 5000])
def test_hostile_json_is_a_canonical_error(text: bytes) -> None:
    with pytest.raises(canonical.CanonicalError):
        canonical.loads(text)


def test_non_string_flags_are_a_manifest_error() -> None:
    m = {"format": 1, "flags": [{}]}
    with pytest.raises(ManifestError):
        check_manifest(m)


def test_unsigned_garbage_manifest_is_reported_not_raised(tmp_path: Path) -> None:
    b = ChainBuilder(tmp_path / "segments")
    b.event("boot")
    body = b'{"a":"\\ud800"}' + bytes(64)
    (b.folder / "0000000001.bcs").write_bytes(MAGIC + struct.pack(">BI", REC_MANIFEST, len(body)) + body)
    report = verify_path(b.folder, b.signer.public_key())
    assert any(p.name == "0000000001.bcs" and "manifest" in p.reason for p in report.problems)


@pytest.mark.parametrize(
    ("rtype", "reason"),
    [(REC_HEADER, "event entry carries other records"), (REC_CHECKPOINT, "checkpoint before the header")],
)
def test_event_file_with_extra_records_is_a_problem(tmp_path: Path, rtype: int, reason: str) -> None:
    b = ChainBuilder(tmp_path / "segments")
    path = b.event("boot")
    data = path.read_bytes()
    body = canonical.dumps({"chunks": 0}) + (bytes(64) if rtype == REC_CHECKPOINT else b"")
    extra = struct.pack(">BI", rtype, len(body)) + body
    path.write_bytes(data[: len(MAGIC)] + extra + data[len(MAGIC) :])
    report = verify_path(b.folder, b.signer.public_key())
    assert any(reason in p.reason for p in report.problems)


def test_caller_cannot_override_computed_manifest_fields(tmp_path: Path) -> None:
    b = ChainBuilder(tmp_path)
    w = SegmentWriter(io.BytesIO(), signer=b.signer, hq_public=b.hq_public, device_id="d", boot_id="x", segment_id="s")
    with pytest.raises(SegmentError, match="ciphertext"):
        w.finish(
            seq=0,
            prev=None,
            fields={"ciphertext": {}},
            firmware="t",
            config_sha256=CONFIG_SHA,
            time=time_fields(0, 1),
            flags=[],
        )


def test_salvage_of_a_segment_cut_after_its_final_chunk_still_decrypts(tmp_path: Path) -> None:
    """Power lost between the final (last-flagged) chunk and the manifest: the salvage must open."""
    b = ChainBuilder(tmp_path)
    path = b.salvaged(["clock-unsynced", "recovered"], cut_after_final=True)
    parts: list[bytes] = []
    opened = open_segment(path, b.hq_key, parts.append, recovered=True)
    assert not opened.problems and len(b"".join(parts)) == 71_000
