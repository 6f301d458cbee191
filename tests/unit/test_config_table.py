"""The declarations are the one source: the README table, the settable keys and comment-keeping edits."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from agent.config import SENSOR_SECTIONS, CameraConfig, Config, ConfigError, SensorConfig, default_config, parse_config
from agent.config.edit import set_setting
from agent.config.model import SECTIONS, spec_of
from agent.config.table import declared, lookup, render_table, settable_keys

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_table_is_current() -> None:
    assert render_table() in README.read_text(), "run: python -m agent.config.table README.md"


def test_every_declared_setting_is_in_the_table_with_its_default() -> None:
    table = render_table()
    for key, f in declared():
        assert f"| `{key}` |" in table
        assert spec_of(f).doc


def test_the_dataclass_defaults_are_what_a_file_without_them_reads() -> None:
    built = {name: cls() for name, cls in SECTIONS.items() if name != "device"}
    expected = Config(device=default_config("u").device, cameras={"chest": CameraConfig()}, **built)
    assert default_config("u") == expected


def test_the_settable_keys_come_from_the_declarations() -> None:
    assert set(settable_keys()) == {
        "recording.pre_event_s", "recording.pre_event_audio", "recording.video_bitrate_bps", "evidence.segment_s",
        "sync.interval_s", "sync.bandwidth_bps", "console.login_required_for_read", "console.session_idle_s"}
    config = default_config("u")
    for key in settable_keys():
        lookup(config, key)  # each names a real setting


def test_floats_are_bounded_and_sensor_sections_share_one_declaration() -> None:
    for _key, f in declared():
        if f.type == "float":
            assert spec_of(f).minval is not None and spec_of(f).maxval is not None
    assert all(SECTIONS[name] is SensorConfig for name in SENSOR_SECTIONS)


def test_an_edit_keeps_the_operators_comments_and_layout() -> None:
    text = ('# unit 7, configured by ops\n[device]\nid = "unit-7"  # as enrolled\n\n'
            '[recording]\n# policy: thirty seconds\npre_event_s = 30.0\nvideo_bitrate_bps = 4000000\n')
    changed, config = set_setting(text, "recording.pre_event_s", 12.5)
    assert config.recording.pre_event_s == 12.5
    assert changed == text.replace("pre_event_s = 30.0", "pre_event_s = 12.5")
    added, config = set_setting(text, "sync.interval_s", 7.0)
    assert added.startswith(text) and config.sync.interval_s == 7.0
    assert parse_config(added) == config


def test_an_edit_that_breaks_a_rule_is_an_error_with_the_dotted_key() -> None:
    text = '[device]\nid = "unit-7"\n'
    with pytest.raises(ConfigError) as info:
        set_setting(text, "recording.pre_event_s", 500.0)
    assert info.value.key == "recording.pre_event_s"


def test_dataclass_fields_all_carry_a_declaration() -> None:
    for cls in set(SECTIONS.values()):
        for f in dataclasses.fields(cls):
            assert spec_of(f).doc, f"{cls.__name__}.{f.name}"
