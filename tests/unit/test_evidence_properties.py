"""Property tests: any single-byte change, truncation, reordering, deletion or duplication is detected."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.evidence.segment import SegmentWriter
from agent.evidence.verify import verify_path
from tests.evidence_util import ChainBuilder

_BASE = Path(tempfile.mkdtemp(prefix="bodycam-prop-"))
_BUILDER = ChainBuilder(_BASE / "segments", chunk_bytes=64 * 1024)
_PATHS = _BUILDER.incident(segments=3)
_ORIGINAL = {p.name: p.read_bytes() for p in _PATHS}
_PUB = _BUILDER.signer.public_key()

settings.register_profile("evidence", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _fresh(folder: Path) -> Path:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for name, data in _ORIGINAL.items():
        (folder / name).write_bytes(data)
    return folder


def _work() -> Path:
    return Path(tempfile.mkdtemp(prefix="bodycam-case-"))


@settings(settings.get_profile("evidence"))
@given(st.sampled_from(sorted(_ORIGINAL)), st.data())
def test_any_single_byte_change_is_detected(name: str, data: st.DataObject) -> None:
    folder = _fresh(_work())
    original = _ORIGINAL[name]
    offset = data.draw(st.integers(0, len(original) - 1), label="offset")
    delta = data.draw(st.integers(1, 255), label="xor")
    changed = bytearray(original)
    changed[offset] ^= delta
    (folder / name).write_bytes(bytes(changed))
    report = verify_path(folder, _PUB)
    assert not report.ok
    assert any(p.name == name for p in report.problems) or any(p.seq is not None for p in report.problems)
    shutil.rmtree(folder)


@settings(settings.get_profile("evidence"))
@given(st.sampled_from(sorted(_ORIGINAL)), st.data())
def test_any_truncation_is_detected(name: str, data: st.DataObject) -> None:
    folder = _fresh(_work())
    original = _ORIGINAL[name]
    cut = data.draw(st.integers(0, len(original) - 1), label="cut")
    (folder / name).write_bytes(original[:cut])
    assert not verify_path(folder, _PUB).ok
    shutil.rmtree(folder)


@settings(settings.get_profile("evidence"))
@given(st.permutations(sorted(_ORIGINAL)))
def test_reordering_by_renaming_never_passes_unnoticed(order: list[str]) -> None:
    """Files renamed into another order: the chain still verifies by seq, and every rename is reported."""
    folder = _fresh(_work())
    names = sorted(_ORIGINAL)
    for i, target in enumerate(order):
        (folder / names[i]).write_bytes(_ORIGINAL[target])
    report = verify_path(folder, _PUB)
    moved = sum(1 for i, target in enumerate(order) if names[i] != target)
    assert report.ok
    assert len([w for w in report.warnings if "renamed" in w.reason]) == moved
    shutil.rmtree(folder)


@settings(settings.get_profile("evidence"))
@given(st.sets(st.sampled_from(sorted(_ORIGINAL)), min_size=1), st.sets(st.sampled_from(sorted(_ORIGINAL))))
def test_deletion_or_duplication_is_detected(deleted: set[str], duplicated: set[str]) -> None:
    duplicated -= deleted  # a copy of a deleted file is only a rename
    folder = _fresh(_work())
    for name in duplicated:
        shutil.copyfile(folder / name, folder / f"dup-{name}")
    for name in deleted:
        (folder / name).unlink()
    report = verify_path(folder, _PUB)
    names = sorted(_ORIGINAL)
    kept = [i for i, n in enumerate(names) if n not in deleted]
    contiguous = bool(kept) and kept == list(range(kept[0], kept[-1] + 1))
    if contiguous and not duplicated:
        # losing the first or last entries cannot be told from a partial set, but it is never silent
        assert report.warnings
    else:
        assert not report.ok
    shutil.rmtree(folder)


def test_content_keys_and_nonce_prefixes_never_repeat() -> None:
    seen_keys: set[str] = set()
    seen_prefixes: set[str] = set()
    for _ in range(300):
        sink = _Sink()
        w = SegmentWriter(
            sink,
            signer=_BUILDER.signer,
            hq_public=_BUILDER.hq_public,
            device_id="d",
            boot_id="b",
            segment_id="s",
        )
        header = sink.header()
        seen_keys.add(header["enc"])
        seen_prefixes.add(header["nonce_prefix"])
        del w
    assert len(seen_keys) == 300 and len(seen_prefixes) == 300


class _Sink:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, b: bytes) -> int:
        self.data += b
        return len(b)

    def flush(self) -> None:
        pass

    def header(self) -> dict[str, str]:
        import io

        from agent.evidence.segment import scan

        s = scan(io.BytesIO(bytes(self.data)))
        assert s.header is not None
        return {k: str(v) for k, v in s.header.items()}
