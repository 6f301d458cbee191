"""The one unit API: one command table for both front-ends, access by peer uid, one refusal, one status."""

from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from agent.console.auth import AuthError
from agent.console.backend import BackendError
from agent.control import ControlError, Peer
from agent.sync.heartbeat import unit_status
from agent.unitapi.access import CHANGE, READ, allows, peer_access
from agent.unitapi.commands import _CMDS, COMMANDS, CTL_COMMANDS, ConsoleError
from agent.unitapi.ctl import ctl_handler
from agent.unitapi.errors import Refused
from agent.unitapi.status import PowerStatus, UnitStatus, collect_status

AGENT_UID = 1234
OWN = Peer(AGENT_UID, 77)
ROOT = Peer(0, 78)
OTHER = Peer(4321, 79)


class FakeUnit:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def record(self, action: str, actor: str, note: str | None = None, trigger: str = "console") -> dict[str, Any]:
        self.calls.append(("record", action, actor, note, trigger))
        return {"done": action}

    def switch(self, name: str, on: bool, actor: str) -> dict[str, Any]:
        self.calls.append(("switch", name, on, actor))
        return {name: on}

    def get_status(self) -> UnitStatus:
        return STATUS


STATUS = UnitStatus(
    device_id="unit-7", firmware="1.0", recorder={"state": "recording", "storage_level": "ok", "stealth": True,
                                                  "muted": False, "recording_id": "r1", "gnss": None, "time": None},
    recorder_alive=True, sensors={"chest": {"state": "running"}, "gnss": {"state": "failed", "last_error": "gone"}},
    storage={"level": "ok", "free_bytes": 5, "hours_left": 1.0, "alarm": None}, index={"segments": 3},
    sync={"enabled": False, "problem": None}, power=PowerStatus(80.5, True))


def handle(name: str, args: dict[str, Any] | None = None, peer: Peer = OWN) -> tuple[dict[str, Any], FakeUnit]:
    unit = FakeUnit()
    return ctl_handler(unit, AGENT_UID, lambda: 0)(name, peer, args or {}), unit  # type: ignore[arg-type]


def test_a_socket_peer_gets_its_access_from_its_uid() -> None:
    assert peer_access(AGENT_UID, AGENT_UID) is CHANGE and peer_access(0, AGENT_UID) is CHANGE
    assert peer_access(4321, AGENT_UID) is READ and peer_access(None, AGENT_UID) is READ
    assert allows(CHANGE, READ) and not allows(READ, CHANGE)


def test_ctl_commands_go_through_the_table_to_the_unit() -> None:
    assert handle("start")[1].calls == [("record", "start", OWN.actor, None, "ctl")]
    assert handle("stop")[1].calls == [("record", "stop", OWN.actor, None, "console")]
    assert handle("mark", {"note": "x" * 600}, ROOT)[1].calls == [("record", "mark", ROOT.actor, "x" * 500, "console")]
    assert handle("stealth", {"on": True})[1].calls == [("switch", "stealth", True, OWN.actor)]
    assert handle("mute", {"on": False})[1].calls == [("switch", "mute", False, OWN.actor)]
    status, _ = handle("status", peer=OTHER)
    assert status["state"] == "recording" and status["storage"]["index"] == {"segments": 3}


@pytest.mark.parametrize(("name", "args", "peer", "code"), [
    ("reboot", {}, OWN, "unknown-command"),  # a console command is not on the socket
    ("nope", {}, OWN, "unknown-command"),
    ("stealth", {}, OWN, "bad-request"),
    ("mute", {"on": "yes"}, OWN, "bad-request"),
    ("start", {}, OTHER, "forbidden"),
])
def test_ctl_refusals_are_the_one_refusal(name: str, args: dict[str, Any], peer: Peer, code: str) -> None:
    with pytest.raises(Refused) as info:
        handle(name, args, peer)
    assert info.value.code == code


def test_one_table_serves_both_front_ends() -> None:
    assert set(CTL_COMMANDS) == {"status", "start", "stop", "mark", "stealth", "mute"}
    assert {"record", "config", "reboot", "login"} <= set(COMMANDS)
    assert all(c in _CMDS for c in [*COMMANDS.values(), *CTL_COMMANDS.values()])
    assert ControlError is BackendError is ConsoleError is Refused and issubclass(AuthError, Refused)


def test_the_status_is_assembled_once_and_shaped_for_each_reader() -> None:
    calls: list[str] = []

    def counted(name: str, value: Any) -> Any:
        def get() -> Any:
            calls.append(name)
            return value
        return get

    parts = SimpleNamespace(
        config=SimpleNamespace(device=SimpleNamespace(id="unit-7"), digest="c0ffee"),
        recorder=SimpleNamespace(status=counted("recorder", dict(STATUS.recorder)), alive=True),
        workers=[SimpleNamespace(sensor="chest", status=counted("chest", {"state": "running"}))],
        storage=SimpleNamespace(get_status=counted("storage", dict(STATUS.storage))),
        store=SimpleNamespace(stats=counted("index", {"segments": 3})),
        sensors=SimpleNamespace(power=SimpleNamespace(read=lambda: SimpleNamespace(battery_pct=80.46, charging=True))),
    )
    st = collect_status(parts)  # type: ignore[arg-type]
    assert sorted(calls) == ["chest", "index", "recorder", "storage"]
    assert st.as_dict()["power"] == {"battery_pct": 80.5, "charging": True}
    assert st.as_dict()["sync"] == {"enabled": False, "problem": None}
    beat = st.heartbeat()
    assert beat == unit_status(st.recorder, st.storage, {"battery_pct": 80.5, "charging": True},
                               firmware=st.firmware, config_sha256="c0ffee", sensors=st.sensors)
    # What headquarters' alerts read: the firmware, the config digest, each sensor's state.
    assert beat["config_sha256"] == "c0ffee" and beat["firmware"] == st.firmware
    assert beat["sensors"] == {"chest": {"state": "running", "last_error": None}}
    faulty = STATUS.heartbeat()["sensors"]
    assert faulty["gnss"] == {"state": "failed", "last_error": "gone"}
    assert STATUS.line() == "RECORDING; stealth; sensor fault: gnss"
    assert STATUS.faults("cut off") == ["sensor gnss: failed: gone", "sync: cut off"]


def test_no_console_module_imports_the_daemon() -> None:
    console = Path(__file__).resolve().parents[2] / "agent" / "console"
    for path in console.glob("*.py"):
        tree = ast.parse(path.read_text())
        names = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        names += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not [n for n in names if n and n.split(".")[:2] in (["agent", "daemon"], ["agent", "running"])], path


def test_config_set_keeps_the_operators_comments(tmp_path: Path) -> None:
    from agent.console.auth import TrustStore
    from agent.console.logring import LogRing
    from agent.unitapi.api import UnitApi
    from tests.fakes import FakeClock
    from tests.unit.test_console_backend import FakeAgent

    agent = FakeAgent(tmp_path, FakeClock())
    path = tmp_path / "bodycam.toml"
    path.write_text('# unit 7: ops keeps this file\n[device]\nid = "unit-7"  # as enrolled\n\n'
                    '[recording]\n# thirty seconds is the policy\npre_event_s = 30.0\n')
    unit = UnitApi(agent, config_path=path, ring=LogRing(), trust=TrustStore("unit-7"))  # type: ignore[arg-type]
    try:
        assert unit.config_set("recording.pre_event_s", "12.5", "console:alice:ab")["changed"]
        text = path.read_text()
        assert "# unit 7: ops keeps this file" in text and "# thirty seconds is the policy" in text
        assert "# as enrolled" in text and "pre_event_s = 12.5" in text
    finally:
        agent.store.close()
