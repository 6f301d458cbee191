"""The real agent process records a scripted incident on simulated sensors; the evidence holds."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from agent.evidence.manifest import parse_manifest_record
from agent.evidence.segment import scan
from agent.media.encoder_probe import CodecProbe
from agent.media.encoder_select import EncoderRequest
from agent.store import Store
from tests.fakes import FakeClock
from tests.integration.agent_util import (
    AgentProcess,
    provision_sim,
    run_cli,
    verify_json,
    with_inputs_script,
)
from tests.media_probe import probe

HW_CODEC = "h264_v4l2m2m"


def manifests(data: Path) -> list[dict]:  # type: ignore[type-arg]
    out = []
    for p in sorted((data / "segments").glob("*.bcs")):
        with p.open("rb") as fh:
            s = scan(fh)
        assert s.manifest_record is not None, p
        out.append(parse_manifest_record(s.manifest_record).manifest)
    return out


def test_scripted_incident_records_verifies_and_decodes(tmp_path: Path) -> None:
    data = tmp_path / "unit"
    cfg = provision_sim(data, pre_event_s=3.0, segment_s=4.0)
    # button at 6 s (3 s of pre-event by then), a mark at 9 s, button again at 17 s
    with_inputs_script(cfg, "6:record,9:mark,17:record")
    agent = AgentProcess(data, cfg, duration_s=20)
    agent.wait_ready()
    time.sleep(11.5)
    reply = agent.ctl("mark", note="second mark, from the control socket")
    assert reply["ok"] and reply["data"]["recording"] is True, reply
    status = agent.ctl("status")["data"]
    assert status["state"] == "recording" and status["dropped"] == {"chest": 0, "thermal": 0, "audio": 0}
    assert agent.wait(60) == 0, agent.log()

    # public verification passes, and with headquarters' key every chunk decrypts and decodes
    doc = verify_json(data, "--hq-key", str(data / "dev-hq" / "hq.key"))
    assert doc["_exit"] == 0 and doc["ok"], json.dumps(doc["problems"], indent=1)
    assert doc["clean_end"] and doc["decrypted"]

    ms = manifests(data)
    events = [m["event"] for m in ms if m["type"] == "event"]
    assert events == ["boot", "record-start", "record-stop", "shutdown"]
    segs = [m for m in ms if m["type"] == "segment"]
    start_ev = next(m for m in ms if m.get("event") == "record-start")
    stop_ev = next(m for m in ms if m.get("event") == "record-stop")
    assert start_ev["detail"]["trigger"] == "button"
    # pre-event: the first segment starts 3-4 s before the button, flagged
    pre_ns = start_ev["time"]["mono_start_ns"] - segs[0]["time"]["mono_start_ns"]
    assert 3e9 <= pre_ns < 4.2e9 and "pre-event" in segs[0]["flags"]
    # segments abut; the footage covers pre-event plus the ~11 s between the presses
    for a, b in zip(segs, segs[1:], strict=False):
        assert b["time"]["mono_start_ns"] == a["time"]["mono_end_ns"]
    footage_s = (segs[-1]["time"]["mono_end_ns"] - segs[0]["time"]["mono_start_ns"]) / 1e9
    between_s = (stop_ev["time"]["mono_start_ns"] - start_ev["time"]["mono_start_ns"]) / 1e9
    assert between_s + 3 - 0.5 <= footage_s <= between_s + 4.2
    # both marks are in the manifests; the note is sealed, never in the clear
    assert sum(len(s["marks"]) for s in segs) == 2
    assert b"second mark" not in b"".join(p.read_bytes() for p in (data / "segments").glob("*.bcs"))
    # gnss fixes were sealed into the manifests (encrypted metadata is present)
    assert all("sealed" in s for s in segs[1:])

    # decrypted media: three tracks with the frame counts the manifests claim
    out = tmp_path / "decrypted"
    res = run_cli("hq", "decrypt", *map(str, sorted((data / "segments").glob("*.bcs"))), "--key",
                  str(data / "dev-hq" / "hq.key"), "--out", str(out))
    assert res.returncode == 0, res.stderr
    total_video = 0
    for seg in segs:
        streams = probe(out / f"{seg['seq']:010d}.mkv").streams
        assert [s.codec for s in streams] == ["h264", "ffv1", "opus"]
        video = next(t for t in seg["tracks"] if t["name"] == "chest")
        thermal = next(t for t in seg["tracks"] if t["name"] == "thermal")
        assert streams[0].frames_decoded == video["frames"]
        assert streams[1].frames_decoded == thermal["frames"]
        assert streams[0].width == 1280 and streams[1].pix_fmt == "gray16le"
        total_video += video["frames"] + video["dropped"]
    # 30 fps: every frame is stored or declared dropped by the sensor; nothing lost between segments.
    # (the footage ends with the last packet of any track: a thermal frame lasts 115 ms, ~3.5 video frames)
    assert -4 <= total_video - footage_s * 30 <= 1

    # the audit log has every action, with who did it
    with Store(data / "index.sqlite", FakeClock()) as store:
        audit = [(e.actor, e.action, e.outcome) for e in store.audit_tail(50)]
        assert store.integrity_check() == "ok"
    assert ("input:record", "toggle_record", "ok") in audit
    assert any(a.startswith("ctl:uid=") and act == "mark" for a, act, _ in audit)


def test_sigterm_while_recording_seals_and_closes_the_chain(tmp_path: Path) -> None:
    data = tmp_path / "unit"
    cfg = provision_sim(data, pre_event_s=0.0, segment_s=4.0)
    agent = AgentProcess(data, cfg)
    agent.wait_ready()
    assert agent.ctl("start")["ok"]
    time.sleep(3)
    agent.terminate()
    assert agent.wait(60) == 0, agent.log()
    doc = verify_json(data)
    assert doc["ok"] and doc["clean_end"], doc["problems"]
    ms = manifests(data)
    assert [m.get("event") for m in ms if m["type"] == "event"][-2:] == ["record-stop", "shutdown"]
    stop = next(m for m in ms if m.get("event") == "record-stop")
    assert stop["detail"]["by"] == "shutdown"
    assert not list((data / "segments").glob("*.part"))


def test_bad_config_is_refused_with_the_key_name(tmp_path: Path) -> None:
    data = tmp_path / "unit"
    cfg = provision_sim(data)
    cfg.write_text(cfg.read_text().replace("pre_event_s = 30.0", "pre_event_s = 300.0"))
    res = run_cli("run", "--sim", "--data-dir", str(data), "--config", str(cfg), "--duration", "1")
    assert res.returncode == 2
    assert "recording.pre_event_s" in res.stderr
    assert not (data / "segments").exists() or not list((data / "segments").iterdir())


def test_an_unusable_configured_encoder_refuses_to_start_in_one_line(tmp_path: Path) -> None:
    probe = CodecProbe()(HW_CODEC, EncoderRequest(1280, 720, 30, 1, "yuv420p", 4_000_000, 30, 1))
    if probe.usable:  # a board with the encoder: this refusal cannot happen here
        pytest.skip(f"{HW_CODEC} is usable on this machine: {probe.reason}")
    data = tmp_path / "unit"
    cfg = provision_sim(data)
    cfg.write_text(cfg.read_text().replace('encoder = "auto"', f'encoder = "{HW_CODEC}"'))
    res = run_cli("run", "--sim", "--data-dir", str(data), "--config", str(cfg), "--duration", "1")
    assert res.returncode == 2
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith(f"bodycam run: cameras.chest.encoder: {HW_CODEC} (configured) is unusable: "), res.stderr
    assert 'set cameras.chest.encoder = "auto" to record with libx264 on this board' in last
    assert not (data / "segments").exists() or not list((data / "segments").iterdir())


def test_unprovisioned_unit_refuses_to_run(tmp_path: Path) -> None:
    res = run_cli("run", "--data-dir", str(tmp_path / "empty"), "--duration", "1")
    assert res.returncode == 2 and "not provisioned" in res.stderr


def test_two_cameras_are_both_recorded(tmp_path: Path) -> None:
    import dataclasses
    import types

    from agent.config import SensorConfig, load_config, render_config

    data = tmp_path / "unit"
    cfg_path = provision_sim(data, pre_event_s=0.0, segment_s=3.0)
    cfg = load_config(cfg_path)
    small = types.MappingProxyType({"width": 640, "height": 360, "fps": 15})
    cameras = {"chest": SensorConfig(options=small), "shoulder": SensorConfig(options=small)}
    cfg_path.write_text(render_config(dataclasses.replace(cfg, cameras=cameras)))
    agent = AgentProcess(data, cfg_path)
    agent.wait_ready()
    assert agent.ctl("start")["ok"]
    time.sleep(4)
    assert agent.ctl("stop")["ok"]
    agent.terminate()
    assert agent.wait(60) == 0, agent.log()
    doc = verify_json(data, "--hq-key", str(data / "dev-hq" / "hq.key"))
    assert doc["ok"], doc["problems"]
    segs = [m for m in manifests(data) if m["type"] == "segment"]
    names = [t["name"] for t in segs[0]["tracks"]]
    assert names[:2] == ["chest", "shoulder"]
    for cam in ("chest", "shoulder"):
        frames = sum(t["frames"] for s in segs for t in s["tracks"] if t["name"] == cam)
        assert 45 <= frames <= 75, (cam, frames)  # ~4 s at 15 fps from the first keyframe
