"""The recorder driven synchronously with a fake clock: pre-event, rotation, marks, stealth, mute.

Real encoders, real muxer, real sealing and a real store; only time is fake.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.evidence.media_check import check_media
from agent.evidence.verify import verify_path
from agent.recorder import CommandError
from agent.state import StateFile
from tests.recorder_rig import FPS, Rig, S


def test_incident_with_pre_event_rotation_and_marks(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.tick(50)  # 5 s of buffering
    t_start = rig.clock.monotonic_ns()
    answer = rig.rec.step_command("start", trigger="button")
    assert 2.0 <= answer["pre_event_s"] <= 3.0  # from the keyframe at least 2 s back
    rig.tick(30)
    rig.rec.step_command("mark", note="suspect left the car")
    rig.tick(95)
    rig.rec.step_command("stop")
    rig.tick(5)
    rig.rec.step_shutdown()
    rig.chain.event("shutdown")

    ms = rig.manifests()
    segs = [m for m in ms if m["type"] == "segment"]
    events = [m["event"] for m in ms if m["type"] == "event"]
    assert events == ["boot", "record-start", "record-stop", "shutdown"]
    assert len(segs) >= 3
    # the first segment holds the pre-event footage, starting at a keyframe 2-3 s before the button
    first = segs[0]
    assert first["flags"] == ["pre-event"]
    assert 2 * S <= t_start - first["time"]["mono_start_ns"] <= 3 * S
    assert (t_start - first["time"]["mono_start_ns"]) % (S // FPS * FPS) == 0  # on a GOP boundary
    # segments abut exactly, and every frame from the first keyframe to the stop is in exactly one
    for a, b in zip(segs, segs[1:], strict=False):
        assert b["time"]["mono_start_ns"] == a["time"]["mono_end_ns"]
    video_frames = sum(t["frames"] for s in segs for t in s["tracks"] if t["name"] == "chest")
    start_ns = first["time"]["mono_start_ns"]
    stop_index = 50 + 30 + 95  # frames fed before stop
    expected = len([t for t in rig.fed_video_ns[:stop_index] if t >= start_ns])
    assert video_frames == expected
    # rotation: every segment but the last is at least segment_s long and starts on a keyframe
    for s in segs[:-1]:
        assert s["time"]["mono_end_ns"] - s["time"]["mono_start_ns"] >= 4 * S
    # the mark is in the manifest of the segment recording at that moment, its note sealed
    marked = [s for s in segs if s["marks"]]
    assert len(marked) == 1 and marked[0]["marks"][0]["by"] == "test"
    assert b"suspect left" not in b"".join(p.read_bytes() for p in (tmp_path / "segments").glob("*.bcs"))
    # the whole chain verifies, decrypts and decodes to the frame counts in the manifests
    report = verify_path(tmp_path, rig.signer.public_key(), hq_key=rig.hq, decode=check_media)
    assert report.ok, [p.reason for p in report.problems]
    assert report.clean_end


def test_no_pre_event_starts_at_the_next_keyframe(tmp_path: Path) -> None:
    rig = Rig(tmp_path, pre_event_s=0)
    rig.tick(15)  # mid-GOP
    t_start = rig.clock.monotonic_ns()
    rig.rec.step_command("start")
    rig.tick(12)
    rig.rec.step_command("stop")
    segs = [m for m in rig.manifests() if m["type"] == "segment"]
    assert len(segs) == 1 and "pre-event" not in segs[0]["flags"]
    chest = next(t for t in segs[0]["tracks"] if t["name"] == "chest")
    # the keyframe was asked for at once: every frame from the button on is recorded
    assert chest["frames"] == 12
    assert segs[0]["time"]["mono_start_ns"] == t_start
    report = verify_path(tmp_path, rig.signer.public_key(), hq_key=rig.hq, decode=check_media)
    assert report.ok, [p.reason for p in report.problems]


def test_illegal_commands_are_refused_and_audited(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    with pytest.raises(CommandError, match="not recording"):
        rig.rec.step_command("stop")
    rig.rec.step_command("start")
    with pytest.raises(CommandError, match="already recording"):
        rig.rec.step_command("start")
    with pytest.raises(CommandError, match="unknown command"):
        rig.rec.step_command("self-destruct")
    outcomes = [(e.action, e.outcome) for e in rig.store.audit_tail(10)]
    assert ("stop", "refused") in outcomes and ("start", "ok") in outcomes and ("start", "refused") in outcomes


def test_stealth_and_mute_are_signed_events_and_flags(tmp_path: Path) -> None:
    rig = Rig(tmp_path, pre_event_s=0)
    rig.rec.step_command("start")
    rig.tick(5)
    rig.rec.step_command("stealth", on=True)
    rig.rec.step_command("mute", on=True)
    rig.tick(10)
    audio_before_stop = rig.rec.status()["frames"]["audio"]
    rig.rec.step_command("stop")
    ms = rig.manifests()
    assert [m["event"] for m in ms if m["type"] == "event"] == [
        "boot",
        "record-start",
        "stealth-on",
        "mute-on",
        "record-stop",
    ]
    seg = next(m for m in ms if m["type"] == "segment")
    assert seg["flags"] == ["muted", "stealth"]
    audio = next(t for t in seg["tracks"] if t["name"] == "audio")
    # audio after the mute is not recorded: only ~0.5 s of the 1.5 s captured is in the segment
    assert 0 < audio["frames"] < audio_before_stop * 0.6


def test_the_audio_tap_sees_every_audio_packet_with_the_mute_it_met(tmp_path: Path) -> None:
    rig = Rig(tmp_path, pre_event_s=0)
    seen: list[tuple[str, int, bool]] = []
    rig.rec.tap_audio(lambda packet, muted: seen.append((packet.track, packet.pts_ns, muted)))
    rig.tick(5)  # ready, not recording: the background recording hears these too
    rig.rec.step_command("mute", on=True)
    rig.tick(5)
    rig.rec.step_command("mute", on=False)
    rig.tick(5)
    assert {track for track, _, _ in seen} == {"audio"}
    assert rig.audio.get_status()["packets_out"] == len(seen)  # every packet, muted or not
    states = [muted for _, _, muted in seen]
    assert states[0] is False and True in states and states[-1] is False
    first_muted = states.index(True)
    assert all(states[first_muted:first_muted + 20]) and not any(states[:first_muted])


def test_state_is_persisted_while_recording(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.rec.step_command("start")
    loaded = StateFile(tmp_path / "state.json").load()
    assert loaded.persisted is not None and loaded.persisted.state.value == "recording"
    rig.rec.step_command("stop")
    loaded = StateFile(tmp_path / "state.json").load()
    assert loaded.persisted is not None and loaded.persisted.state.value == "ready"


def test_storage_levels_warn_drop_pre_event_refuse_and_stop(tmp_path: Path) -> None:
    rig = Rig(tmp_path, pre_event_s=2)
    rig.tick(30)
    rig.rec.step_command("storage_level", "storage", level="low", free_bytes=3 << 30)
    assert rig.rec.status()["pre_event"]["buffered_packets"] > 0  # LOW only warns
    assert rig.rec.status()["pre_event"]["buffered_s"] >= 2 and rig.rec.status()["pre_event"]["buffered_bytes"] > 0
    rig.rec.step_command("storage_level", "storage", level="critical", free_bytes=500 << 20)
    rig.tick(5)
    assert rig.rec.status()["pre_event"]["buffered_packets"] == 0  # the pre-event buffer is given up
    assert rig.rec.status()["pre_event"]["buffered_s"] == 0 and rig.rec.status()["pre_event"]["buffered_bytes"] == 0
    rig.rec.step_command("start")  # recordings still start at CRITICAL
    rig.tick(10)
    rig.rec.step_command("storage_level", "storage", level="full", free_bytes=200 << 20)
    rig.tick(5)
    assert rig.rec.status()["state"] == "recording"  # FULL never cuts an ongoing recording
    rig.rec.step_command("storage_level", "storage", level="exhausted", free_bytes=90 << 20)
    assert rig.rec.status()["state"] == "ready"  # below the reserve: stopped and sealed cleanly
    with pytest.raises(CommandError, match="storage exhausted"):
        rig.rec.step_command("start")
    events = [m["event"] for m in rig.manifests() if m["type"] == "event"]
    assert events == [
        "boot",
        "storage-low",
        "storage-low",
        "record-start",
        "storage-full",
        "storage-full",
        "record-stop",
    ]
    stop = [m for m in rig.manifests() if m.get("event") == "record-stop"][0]
    assert stop["detail"]["by"] == "storage"
    report = verify_path(tmp_path, rig.signer.public_key(), hq_key=rig.hq, decode=check_media)
    assert report.ok, [p.reason for p in report.problems]


def test_long_pre_event_is_cut_into_segments_and_declares_its_drops(tmp_path: Path) -> None:
    rig = Rig(tmp_path, pre_event_s=9, segment_s=4)
    rig.tick(60)
    rig.rec.step(("drops", "chest", 2, rig.clock.monotonic_ns() - 3 * S))  # lost while buffering, 3 s ago
    rig.rec.step_command("start")
    rig.tick(10)
    rig.rec.step_command("mark")
    rig.tick(45)
    rig.rec.step_command("mark")
    rig.rec.step_command("stop")
    segs = [m for m in rig.manifests() if m["type"] == "segment"]
    pre = [s for s in segs if "pre-event" in s["flags"]]
    assert len(pre) >= 2  # 9-10 s of buffered footage, cut at 4 s like the rest
    assert all(s["time"]["mono_end_ns"] - s["time"]["mono_start_ns"] <= 5 * S for s in segs)
    assert sum(s["pre_event_ns"] for s in segs) == sum(
        s["time"]["mono_end_ns"] - s["time"]["mono_start_ns"] for s in pre[:-1]
    ) + pre[-1]["pre_event_ns"]
    assert sum(t["dropped"] for s in segs for t in s["tracks"] if t["name"] == "chest") == 2
    marks = [m["id"] for s in segs for m in s["marks"]]
    assert marks == [1, 2]  # numbered per recording, not per segment
    report = verify_path(tmp_path, rig.signer.public_key(), hq_key=rig.hq, decode=check_media)
    assert report.ok, [p.reason for p in report.problems]
