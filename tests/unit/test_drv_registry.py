"""Every hardware driver is registered by name, importable without its vendor library, reports why it
is unusable here, and the example unit configs parse and build their drivers; `bodycam drivers`."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest

from agent import drivers_cmd
from agent.config import load_config
from agent.unit import DriverListing, list_drivers
from drivers.registry import Registry, load_all
from hal.common import Availability
from tests.fakes import FakeClock

REPO = Path(__file__).resolve().parents[2]
HARDWARE = {
    ("camera", "picamera2"), ("camera", "v4l2"), ("thermal", "lepton-spi"), ("thermal", "purethermal"),
    ("thermal", "mlx90640"), ("microphone", "alsa"), ("gnss", "gpsd"), ("inputs", "gpio"),
    ("indicators", "gpio"), ("power", "max17048"), ("power", "sysfs"),
}  # fmt: skip
REASONS = ("library missing", "device absent", "permission denied")


def test_every_hardware_driver_is_registered_and_says_why_it_is_unusable() -> None:
    rows = {(r.kind, r.name): r for r in list_drivers()}
    assert set(rows) >= HARDWARE
    for key in HARDWARE:
        row = rows[key]
        assert row.summary, f"{key} has no summary"
        assert row.usable or row.reason.startswith(REASONS), f"{key}: {row.reason!r}"


def test_a_probe_that_raises_is_reported_not_propagated() -> None:
    reg = Registry()

    @reg.register("camera", "broken")
    class Broken:
        """A driver whose vendor library blows up."""

        @classmethod
        def probe(cls) -> Availability:
            raise RuntimeError("libcamera exploded")

    [row] = list_drivers(reg)
    assert not row.usable and "RuntimeError: libcamera exploded" in row.reason


@pytest.mark.parametrize("name", ["pi5-unit.toml", "jetson-orin-nano.toml"])
def test_example_configs_parse_and_create_their_drivers(name: str) -> None:
    config = load_config(REPO / "configs" / name)
    registry = load_all()
    sections = [("camera", sc) for sc in config.cameras.values()] + [
        (kind, getattr(config, section)) for kind, section in (
            ("thermal", "thermal"), ("microphone", "microphone"), ("gnss", "gnss"),
            ("inputs", "inputs"), ("indicators", "indicators"), ("power", "power"))
    ]  # fmt: skip
    created = 0
    for kind, sc in sections:
        if sc.enabled:
            device = registry.create(kind, sc.driver, name=kind, clock=FakeClock(), **dict(sc.options))
            assert device.name == kind and device.get_status()["open"] is False
            created += 1
    assert created >= 3


def test_drivers_command_prints_a_table_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    drivers_cmd.render([DriverListing("gnss", "gpsd", "A receiver.", False, "device absent: no gpsd")], out)
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["KIND", "DRIVER", "STATUS"]
    assert "unavailable: device absent: no gpsd" in lines[1] and "A receiver." in lines[2]
    parser = argparse.ArgumentParser()
    drivers_cmd.add_parser(parser.add_subparsers())
    assert drivers_cmd.run(parser.parse_args(["drivers", "--kind", "thermal", "--json"])) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {d["name"] for d in doc} >= {"lepton-spi", "purethermal", "mlx90640", "sim"}
    assert drivers_cmd.run(parser.parse_args(["drivers", "--kind", "teleporter"])) == 2
