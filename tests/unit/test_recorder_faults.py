"""ERROR for real, through the recorder: every media sensor failed, or no segment for too long; sync alarms."""

from __future__ import annotations

import errno
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.chainlog import OsSegmentFile, SegmentFile
from agent.evidence.verify import check_file
from agent.recorder.mode import OPEN_FAULT_NS
from agent.state import State, StateFile
from agent.sync.alarms import recorder_hooks
from tests.recorder_rig import FPS, Rig, S


class FlakyOpener:
    """Opens segment files until told to refuse."""

    def __init__(self) -> None:
        self.refuse = False

    def __call__(self, path: Path) -> SegmentFile:
        if self.refuse:
            raise OSError(errno.EIO, "Input/output error", str(path))
        return OsSegmentFile(path)


def _persisted(tmp_path: Path) -> tuple[State, str | None]:
    loaded = StateFile(tmp_path / "state.json").load().persisted
    assert loaded is not None
    return loaded.state, loaded.recording_id


def test_every_media_sensor_failed_is_error_until_one_delivers(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.tick(5)
    rec = rig.rec.step_command("start")["recording_id"]
    rig.tick(5)
    rig.rec.step_command("sensor_fault", sensor="chest", error="gone")
    assert rig.rec.get_status()["state"] == "recording"
    rig.rec.step_command("sensor_fault", sensor="audio", error="gone")
    status = rig.rec.get_status()
    assert status["state"] == "error" and status["recording_id"] == rec
    assert _persisted(tmp_path) == (State.ERROR, rec)  # a restart now resumes the recording
    rig.tick(1)  # the sensors deliver again
    assert rig.rec.get_status()["state"] == "recording"
    assert _persisted(tmp_path) == (State.RECORDING, rec)
    rig.rec.step_command("stop")
    assert rig.rec.get_status()["state"] == "ready"


def test_no_segment_for_too_long_is_error_until_one_opens(tmp_path: Path) -> None:
    opener = FlakyOpener()
    rig = Rig(tmp_path, opener=opener)
    rig.tick(5)
    opener.refuse = True
    rec = rig.rec.step_command("start")["recording_id"]
    rig.tick(OPEN_FAULT_NS * FPS // S - 1)
    assert rig.rec.get_status()["state"] == "recording"
    rig.tick(2)
    status = rig.rec.get_status()
    assert status["state"] == "error" and status["recording_id"] == rec and status["segment"] is None
    assert "cannot open a segment" in (status["last_error"] or "")
    opener.refuse = False
    rig.tick(2 * FPS)  # past the retry interval, at the next keyframe
    status = rig.rec.get_status()
    assert status["state"] == "recording" and status["segment"] is not None
    assert sum(status["lost_to_storage"].values()) > 0
    rig.rec.step_command("stop")
    segs = [m for m in rig.manifests() if m["type"] == "segment"]
    assert [s["trigger"] for s in segs] == ["continued"] and segs[0]["recording_id"] == rec


def test_stop_while_in_error_leaves_the_recording_and_the_fault(tmp_path: Path) -> None:
    opener = FlakyOpener()
    rig = Rig(tmp_path, opener=opener)
    opener.refuse = True
    rig.rec.step_command("start")
    rig.tick(OPEN_FAULT_NS * FPS // S + 2)
    assert rig.rec.get_status()["state"] == "error"
    rig.rec.step_command("stop")
    assert rig.rec.get_status()["state"] == "ready" and _persisted(tmp_path) == (State.READY, None)


def test_sync_alarms_reach_the_chain_as_signed_events_that_verify(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    hooks = recorder_hooks(lambda name, actor, **args: rig.rec.step_command(name, actor, **args))
    on_alarm, on_cleared = hooks
    on_alarm("auth", "headquarters refuses this unit (401)")
    on_alarm("auth", "still refused")  # a standing alarm raised again signs nothing new
    on_cleared("auth")
    events = [(mf["event"], mf["detail"].get("kind")) for mf in rig.manifests() if mf["type"] == "event"]
    assert events[-2:] == [("sync-alarm", "auth"), ("sync-alarm-cleared", "auth")]
    assert sum(e == "sync-alarm" for e, _ in events) == 1
    pub = ed25519.Ed25519PublicKey.from_public_bytes(rig.signer.public_key_raw())
    for path in sorted((tmp_path / "segments").glob("*.bcs")):
        result, _ = check_file(path, pub)
        assert not result.problems, (path.name, result.problems)
