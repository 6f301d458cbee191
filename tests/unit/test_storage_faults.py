"""Storage faults while recording: nothing sealed on a failed write or fsync, nothing lost silently."""

from __future__ import annotations

import errno
from pathlib import Path

from agent.evidence.media_check import check_media
from agent.evidence.verify import verify_path
from agent.recovery import recover
from tests.faultfs import FaultPlan, FaultyFiles
from tests.recorder_rig import Rig


def _verify(rig: Rig) -> None:
    report = verify_path(rig.dir, rig.signer.public_key(), hq_key=rig.hq, decode=check_media)
    assert report.ok, [f"{p.name}: {p.reason}" for p in report.problems]


def test_disk_full_mid_segment_salvages_and_keeps_recording(tmp_path: Path) -> None:
    files = FaultyFiles(FaultPlan(fail_write_after_bytes=5_000, write_errno=errno.ENOSPC))
    rig = Rig(tmp_path, pre_event_s=0, segment_s=4, opener=files)
    rig.rec.step_command("start")
    rig.tick(30)  # the first segment fails part-way
    assert rig.space_faults == 1  # the maintainer is asked to measure at once
    assert rig.rec.status()["segment"] is None  # and no footage is written until it has
    rig.tick(10)
    assert rig.rec.status()["segment"] is None
    # it found room (the disk "recovers" for the next segment): recording goes on
    rig.rec.step_command("storage_level", "storage", level="ok", free_bytes=10**9)
    rig.tick(30)
    rig.rec.step_command("stop")
    ms = rig.manifests()
    kinds = [m.get("event") or ("recovered" if "recovered" in m["flags"] else "segment") for m in ms]
    assert "storage-full" in kinds and "recovered" in kinds
    assert kinds.index("recovered") < kinds.index("storage-full") < len(kinds) - 1
    # recording went on in a new segment after the fault
    after = [m for m in ms[kinds.index("storage-full") :] if m["type"] == "segment"]
    assert after and after[0]["trigger"] == "continued"
    status = rig.rec.status()
    assert sum(status["lost_to_storage"].values()) > 0  # frames that found no segment are counted
    assert not list((tmp_path / "segments").glob("*.part"))
    _verify(rig)


def test_failed_fsync_never_marks_a_segment_sealed(tmp_path: Path) -> None:
    # sync 1 is the first checkpoint; sync 2 is the seal of the first segment (4 s), which fails
    files = FaultyFiles(FaultPlan(fail_sync_on_call=None))
    rig = Rig(tmp_path, pre_event_s=0, segment_s=30, opener=files)
    rig.rec.step_command("start")
    rig.tick(25)
    files.plan.fail_sync_on_call = files.syncs + 1
    rig.rec.step_command("stop")  # sealing: the manifest is written, then its fsync fails
    partial = list((tmp_path / "segments").glob("*.part"))
    assert len(partial) == 1  # kept, not renamed, not indexed
    sealed_paths = {s.path for s in rig.store.segments() if s.kind == "segment"}
    assert not any(partial[0].stem in p for p in sealed_paths)
    assert any(m.get("event") == "storage-error" for m in rig.manifests())
    # next start: recovery finds a manifest that does not extend the chain any more -> quarantined
    chain = rig.restart_chain()
    report = recover(tmp_path, chain, rig.store)
    assert report.quarantined == [partial[0].name]
    assert (tmp_path / "quarantine" / partial[0].name).exists()
    _verify(rig)


def test_power_cut_keeps_exactly_the_synced_prefix(tmp_path: Path) -> None:
    files = FaultyFiles(FaultPlan())
    rig = Rig(tmp_path, pre_event_s=0, segment_s=30, opener=files)
    rig.rec.step_command("start")
    rig.tick(35)  # 3.5 s: three checkpoints were synced, then half a second more was written
    part = next((tmp_path / "segments").glob("*.part"))
    size_before, synced = part.stat().st_size, files.synced_size[part]
    files.power_cut(torn_tail_bytes=3)  # unsynced bytes lost, a torn scrap of the next record left
    # the unit comes back: a new chain log on the same store recovers before anything else
    chain = rig.restart_chain()
    report = recover(tmp_path, chain, rig.store)
    assert len(report.recovered) == 1 and not part.exists()
    assert report.attested_chunks == report.salvaged_chunks  # everything kept was checkpointed
    seg = next(m for m in rig.manifests() if "recovered" in m["flags"])
    # footage up to the last checkpoint survives: about a second before the cut at most
    lost_ns = rig.clock.monotonic_ns() - seg["time"]["mono_end_ns"]
    assert 0 <= lost_ns <= 1_100_000_000
    assert seg["recovery"]["dropped_tail_bytes"] == min(size_before, synced + 3) - synced
    assert seg["ciphertext"]["length"] == synced  # exactly the durable prefix, nothing torn
    chain.event("boot")
    chain.event("recovered-after-power-loss", report.as_detail())
    _verify(rig)
