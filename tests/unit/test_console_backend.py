"""The agent behind the console: AgentBackend over a stand-in agent, and the self-test's real checks."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from agent.config import default_config, load_config, render_config
from agent.config.table import lookup
from agent.console import selftest
from agent.console.auth import TrustStore
from agent.console.backend import BackendError, verdict
from agent.console.logring import LogRing
from agent.evidence.keys import FileKeyStore, fingerprint, generate_device_key, generate_hq_key, public_der
from agent.recorder import CommandError
from agent.store import Store
from agent.unitapi.api import UnitApi as AgentBackend
from agent.unitapi.config_ops import SETTABLE, coerce
from hal.clock import TimeQuality, TimeSource
from tests.fakes import FakeClock


class FakeRecorder:
    alive = True

    def __init__(self) -> None:
        self.commands: list[tuple[str, str, dict[str, Any]]] = []
        self.fail: Exception | None = None

    def command(self, name: str, actor: str, timeout_s: float | None = 10.0, **args: Any) -> dict[str, Any]:
        self.commands.append((name, actor, args))
        if self.fail is not None:
            raise self.fail
        return {"done": name}

    def status(self) -> dict[str, Any]:
        return {"state": "ready", "dropped": {"chest": 0}, "time": {"source": "ntp", "gnss_offset_ms": 1.5},
                "gnss": {"mode": 3, "lat_deg": 52.1, "lon_deg": 4.3, "h_acc_m": 2.5}}


class FakeWorker:
    def __init__(self, sensor: str, state: str = "running", device: dict[str, Any] | None = None) -> None:
        self.sensor = sensor
        self.state = state
        self.items = 0
        self.device = device or {"rate_hz": 30.0, "achieved_rate_hz": 29.9, "dropped": 0}

    def status(self) -> dict[str, object]:
        if self.state == "running":
            self.items += 1  # a live sensor delivers between two looks
        return {"state": self.state, "items": self.items, "restarts": 0,
                "last_error": None if self.state == "running" else "open failed: gone", "device": self.device}


class FakeAgent:
    def __init__(self, data: Path, clock: FakeClock) -> None:
        self.data_dir = data
        self.clock = clock
        generate_device_key(data / "device.key", data / "device.pub")
        generate_hq_key(data / "hq.key", data / "hq.pub")
        self.config = default_config("unit-7")
        (data / "bodycam.toml").write_text(render_config(self.config))
        (data / "bodycam.toml").chmod(0o640)
        self.keystore = FileKeyStore(data / "device.key")
        self.store = Store(data / "index.sqlite", clock)
        self.recorder = FakeRecorder()
        self.workers = [FakeWorker("chest"), FakeWorker("thermal", device={"rate_hz": 8.7, "fpa_temp_ck": 30815}),
                        FakeWorker("inputs")]
        self.sensors = SimpleNamespace(tracks=[SimpleNamespace(kind="video"), SimpleNamespace(kind="thermal")],
                                       power=SimpleNamespace(read=lambda: SimpleNamespace(battery_pct=81.0,
                                                                                         charging=False)))
        self.storage = SimpleNamespace(get_status=lambda: {"level": "ok", "free_bytes": 10**10, "hours_left": 9.5,
                                                           "alarm": None})

    def status(self) -> dict[str, Any]:
        st = self.recorder.status()
        st["sensors"] = {w.sensor: w.status() for w in self.workers}
        st["storage"] = self.storage.get_status()
        st["power"] = {"battery_pct": 81.0, "charging": False}
        return st


@pytest.fixture
def unit(tmp_path: Path) -> Iterator[tuple[FakeAgent, AgentBackend, list[int]]]:
    agent = FakeAgent(tmp_path, FakeClock())
    restarts: list[int] = []
    backend = AgentBackend(agent, config_path=tmp_path / "bodycam.toml", ring=LogRing(),  # type: ignore[arg-type]
                           trust=TrustStore("unit-7"), restart=lambda: restarts.append(1))
    yield agent, backend, restarts
    agent.store.close()


def test_status_summarises_and_lists_faults(unit: tuple[FakeAgent, AgentBackend, list[int]]) -> None:
    agent, backend, _ = unit
    st = backend.status()
    assert st["state"] == "ready" and st["battery"] == {"pct": 81.0, "charging": False}
    assert st["gnss"] == {"fix": "3D fix", "h_acc_m": 2.5} and st["dropped"] == {"chest": 0}
    assert st["storage"]["hours_left"] == 9.5 and st["sync"]["state"] == "off" and st["faults"] == []
    agent.workers[0].state = "failed"
    assert backend.status()["faults"] == ["sensor chest: failed: open failed: gone"]


def test_sensors_show_rates_drops_and_the_thermal_temperature(
        unit: tuple[FakeAgent, AgentBackend, list[int]]) -> None:
    _, backend, _ = unit
    rows = {s["name"]: s for s in backend.sensors()}
    assert rows["chest"]["rate_hz_configured"] == 30.0 and rows["chest"]["rate_hz_achieved"] == 29.9
    assert rows["chest"]["driver"] == "sim" and rows["chest"]["dropped"] == 0
    assert rows["thermal"]["temperature_c"] == 35.0


def test_keys_are_public_fingerprints_only(unit: tuple[FakeAgent, AgentBackend, list[int]]) -> None:
    agent, backend, _ = unit
    keys = backend.key_fingerprints()["keys"]
    assert keys[0] == {"role": "device", "name": "unit-7",
                       "fingerprint": fingerprint(public_der(agent.keystore.public_key()))}
    assert keys[1]["role"] == "hq-encryption" and len(keys[1]["fingerprint"]) == 64
    assert keys[2]["role"] == "hq-receipts" and keys[2]["fingerprint"] is None  # this hq.pub has no receipt key
    text = json.dumps(keys)
    assert "PRIVATE" not in text and "BEGIN" not in text


def test_gps_gives_the_fix_and_receiver_quality(unit: tuple[FakeAgent, AgentBackend, list[int]]) -> None:
    _, backend, _ = unit
    assert backend.gps()["fix"]["mode"] == "3D fix"
    assert backend.time_info()["gnss_offset_ms"] == 1.5


def test_record_goes_through_the_recorder_and_refusals_are_errors(
        unit: tuple[FakeAgent, AgentBackend, list[int]]) -> None:
    agent, backend, _ = unit
    backend.record("start", "console:alice:ab")
    backend.record("mark", "console:alice:ab", note="door")
    assert agent.recorder.commands == [("start", "console:alice:ab", {"trigger": "console"}),
                                       ("mark", "console:alice:ab", {"note": "door"})]
    agent.recorder.fail = CommandError("not recording")
    with pytest.raises(BackendError) as info:
        backend.record("stop", "console:alice:ab")
    assert info.value.code == "refused"


def test_config_list_and_get(unit: tuple[FakeAgent, AgentBackend, list[int]]) -> None:
    _, backend, _ = unit
    listed = backend.config_get("")["settable"]
    assert [s["key"] for s in listed] == list(SETTABLE)
    got = backend.config_get("cameras.chest.driver")
    assert got["running"] == "sim" and got["settable"] is False
    with pytest.raises(BackendError):
        backend.config_get("recording.nope")


def test_config_set_validates_persists_and_signs(unit: tuple[FakeAgent, AgentBackend, list[int]]) -> None:
    agent, backend, _ = unit
    path = agent.data_dir / "bodycam.toml"
    result = backend.config_set("recording.pre_event_s", "12.5", "console:alice:ab")
    assert result["changed"] and result["old"] == 30.0 and result["new"] == 12.5
    saved = load_config(path)
    assert saved.recording.pre_event_s == 12.5 and result["config_sha256"] == saved.digest
    assert path.stat().st_mode & 0o777 == 0o640  # the file keeps its mode
    assert agent.recorder.commands[-1] == ("config_changed", "console:alice:ab", {
        "key": "recording.pre_event_s", "old": "30.0", "new": "12.5", "config_sha256": saved.digest})
    assert backend.version()["restart_pending"] is True
    assert backend.config_get("recording.pre_event_s")["note"] == "changed; applies after `reboot`"
    # setting it again is no change and no chain event
    n = len(agent.recorder.commands)
    assert backend.config_set("recording.pre_event_s", 12.5, "console:alice:ab")["changed"] is False
    assert len(agent.recorder.commands) == n


@pytest.mark.parametrize(("key", "value", "code"), [
    ("hq.public_key", "evil.pub", "refused"),
    ("device.id", "unit-8", "refused"),
    ("recording.pre_event_s", "500", "bad-value"),
    ("recording.pre_event_s", "soon", "bad-value"),
    ("recording.pre_event_audio", "maybe", "bad-value"),
    ("evidence.segment_s", "0.5", "bad-value"),
    ("recording.video_bitrate_bps", "1.5", "bad-value"),
])
def test_config_set_refuses_what_is_not_safe_or_not_valid(
        unit: tuple[FakeAgent, AgentBackend, list[int]], key: str, value: str, code: str) -> None:
    agent, backend, _ = unit
    before = (agent.data_dir / "bodycam.toml").read_bytes()
    with pytest.raises(BackendError) as info:
        backend.config_set(key, value, "console:alice:ab")
    assert info.value.code == code
    assert (agent.data_dir / "bodycam.toml").read_bytes() == before and agent.recorder.commands == []


def test_config_set_is_undone_when_the_chain_event_fails(unit: tuple[FakeAgent, AgentBackend, list[int]]) -> None:
    agent, backend, _ = unit
    before = (agent.data_dir / "bodycam.toml").read_bytes()
    agent.recorder.fail = CommandError("unknown command 'config_changed'")
    with pytest.raises(BackendError) as info:
        backend.config_set("recording.pre_event_audio", "on", "console:alice:ab")
    assert info.value.code == "failed" and "unchanged" in str(info.value)
    assert (agent.data_dir / "bodycam.toml").read_bytes() == before


def test_coerce_and_lookup() -> None:
    assert coerce("on", False, "k") is True and coerce(False, True, "k") is False
    assert coerce("7", 1, "k") == 7 and coerce(7.0, 1, "k") == 7 and coerce("2.5", 1.0, "k") == 2.5
    for value, like in [("x", 1), ("1.5", 1), (True, 1.0), ("yes please", True)]:
        with pytest.raises(BackendError):
            coerce(value, like, "k")
    cfg = default_config("unit-7")
    assert lookup(cfg, "console.baud") == 115200 and lookup(cfg, "cameras.chest.enabled") is True
    with pytest.raises(KeyError):
        lookup(cfg, "console.baud.x")


def test_reboot_answers_first_then_restarts(unit: tuple[FakeAgent, AgentBackend, list[int]]) -> None:
    _, backend, restarts = unit
    assert backend.reboot("console:alice:ab")["restarting"] is True
    assert restarts == []
    deadline = threading.Event()
    deadline.wait(1.5)
    assert restarts == [1]


def test_audit_goes_to_the_store(unit: tuple[FakeAgent, AgentBackend, list[int]]) -> None:
    agent, backend, _ = unit
    backend.audit("console:alice:ab", "console-reboot", "unit-7", "ok", args={})
    last = agent.store.audit_tail(1)[0]
    assert (last.actor, last.action, last.outcome) == ("console:alice:ab", "console-reboot", "ok")


def test_sync_status_without_a_worker_reads_the_backlog(unit: tuple[FakeAgent, AgentBackend, list[int]]) -> None:
    _, backend, _ = unit
    assert backend.sync_status()["backlog_entries"] == 0
    with pytest.raises(BackendError) as info:
        backend.sync_now("console:alice:ab")
    assert info.value.code == "unavailable"


def test_sync_status_with_a_worker(unit: tuple[FakeAgent, AgentBackend, list[int]]) -> None:
    agent, backend, _ = unit
    kicked: list[bool] = []
    agent.sync = SimpleNamespace(  # type: ignore[attr-defined]
        get_status=lambda: {"state": "idle", "connected": True, "backlog": {"entries": 3, "bytes": 9},
                            "last_receipt": {"seq": 4, "utc_ns": 5}, "alarm": None, "hq_url": "https://hq"},
        kick=lambda: kicked.append(True))
    st = backend.sync_status()
    assert st["backlog_entries"] == 3 and st["last_receipt_seq"] == 4 and st["hq_url"] == "https://hq"
    assert backend.sync_now("console:alice:ab") == {"kicked": True} and kicked == [True]


# -- the self-test -----------------------------------------------------------------------------------


def test_the_whole_selftest_passes_on_a_healthy_unit(unit: tuple[FakeAgent, AgentBackend, list[int]]) -> None:
    _, backend, _ = unit
    items = backend.selftest()
    names = [i.name for i in items]
    assert names == ["sensor chest", "sensor thermal", "sensor inputs", "encoder video", "encoder thermal",
                     "seal test segment", "evidence index", "clock", "storage", "recorder"]
    assert verdict(items) == "pass", [i for i in items if i.result != "pass"]


def test_a_silent_sensor_fails_the_selftest() -> None:
    clock = FakeClock()
    dead = FakeWorker("chest", state="failed")
    items = selftest.check_sensors([dead, FakeWorker("gnss")], clock, deadline_s=1.0)
    assert [i.result for i in items] == ["fail", "pass"]
    assert "no sample within 1 s" in items[0].detail and "open failed" in items[0].detail


def test_every_encoder_kind_encodes() -> None:
    items = selftest.check_encoders(["video", "thermal", "audio", "video"])
    assert [(i.name, i.result) for i in items] == [("encoder video", "pass"), ("encoder thermal", "pass"),
                                                   ("encoder audio", "pass")]
    assert selftest.check_encoders(["audio"], audio_codec="no-such-codec")[0].result == "fail"


def test_the_test_segment_is_sealed_in_memory_and_verified(tmp_path: Path) -> None:
    generate_device_key(tmp_path / "device.key", tmp_path / "device.pub")
    generate_hq_key(tmp_path / "hq.key", tmp_path / "hq.pub")
    from agent.evidence.keys import load_hq_public

    signer = FileKeyStore(tmp_path / "device.key")
    item = selftest.check_sealing(signer, load_hq_public(tmp_path / "hq.pub"), "unit-7", 65536, FakeClock())
    assert item.result == "pass", item
    assert sorted(p.name for p in tmp_path.iterdir()) == ["device.key", "device.pub", "hq.key", "hq.pub"]


def test_a_tampered_segment_fails_verification(tmp_path: Path) -> None:
    import io

    from agent.evidence.keys import load_hq_public
    from agent.evidence.segment import SegmentWriter

    generate_device_key(tmp_path / "device.key", tmp_path / "device.pub")
    generate_hq_key(tmp_path / "hq.key", tmp_path / "hq.pub")
    signer = FileKeyStore(tmp_path / "device.key")
    buf = io.BytesIO()
    w = SegmentWriter(buf, signer=signer, hq_public=load_hq_public(tmp_path / "hq.pub"), device_id="u",
                      boot_id="b", segment_id="s")
    w.write(b"x" * 70000)
    time = {"mono_start_ns": 0, "mono_end_ns": 0, "signed_mono_ns": 0, "utc_start_ns": 0, "utc_end_ns": 0,
            "source": "ntp", "synced": True}
    w.finish(seq=0, prev=None, fields={"container": "t", "trigger": "t", "tracks": [], "marks": []},
             firmware="t", config_sha256="0" * 64, time=time, flags=[])
    data = bytearray(buf.getvalue())
    assert selftest.verify_in_memory(bytes(data), signer) == []
    data[200] ^= 1
    assert selftest.verify_in_memory(bytes(data), signer)


def test_clock_checks() -> None:
    clock = FakeClock()
    assert selftest.check_clock(clock).result == "pass"
    clock.set_quality(TimeQuality(TimeSource.RTC, synced=False))
    assert selftest.check_clock(clock).result == "warn"
    clock.set_utc_ns(10**9)
    assert selftest.check_clock(clock).result == "fail"


def test_store_and_storage_checks(tmp_path: Path) -> None:
    assert selftest.check_store(lambda: "ok").result == "pass"
    assert selftest.check_store(lambda: "row 3 missing from index\nmore").detail == "row 3 missing from index"

    def broken() -> str:
        raise OSError("disk gone")

    assert selftest.check_store(broken).result == "fail"
    assert selftest.check_storage({"level": "low", "hours_left": 0.5}).result == "warn"
    assert selftest.check_storage({"level": "full"}).result == "fail"
    assert dataclasses.asdict(selftest.check_storage({"level": "ok", "hours_left": 3}))["result"] == "pass"
