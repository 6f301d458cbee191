"""Config: defaults, every bound and unknown key rejected by name, TOML round trip, digest."""

from __future__ import annotations

import dataclasses
import datetime
import types
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import (
    SENSOR_SECTIONS,
    STANDARD_BAUDS,
    VIDEO_ENCODERS,
    CameraConfig,
    Config,
    ConfigError,
    ConsoleConfig,
    ControlConfig,
    DeviceConfig,
    EvidenceConfig,
    HqConfig,
    RecordingConfig,
    SensorConfig,
    StorageConfig,
    SyncConfig,
    default_config,
    load_config,
    parse_config,
    render_config,
    resolve_path,
)

MINIMAL = '[device]\nid = "unit-7"\n'


def _parse(extra: str) -> Config:
    # Root-level keys must come before the first table header.
    text = MINIMAL + extra if extra.startswith("[") or not extra else extra + MINIMAL
    return parse_config(text, "test.toml")


def _error(extra: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        _parse(extra)
    return info.value


# ---- defaults -----------------------------------------------------------------------------


def test_every_default() -> None:
    c = _parse("")
    assert c.device == DeviceConfig("unit-7")
    assert c.hq == HqConfig(public_key="hq.pub", url="", ca="")
    assert c.evidence == EvidenceConfig("default", 65536, 1.0, 10.0)
    assert c.recording == RecordingConfig(30.0, False, 4_000_000, 1.0, "opus", 64000)
    assert dict(c.cameras) == {"chest": CameraConfig("sim", True, {}, "auto", 1)}
    for name in SENSOR_SECTIONS:
        assert getattr(c, name) == SensorConfig(driver="sim", enabled=True)
    assert c.control == ControlConfig("ctl.sock")
    assert c.console == ConsoleConfig("", 115200, (), "", False, 3, 30.0, 900.0, 300.0)
    assert c.storage == StorageConfig(0, 0, 0, 0, 604800.0)
    assert c.sync == SyncConfig(5.0, 60.0, 0, 1_048_576, 10.0, 30.0, 120.0, 300.0)


def test_default_config_matches_a_minimal_file() -> None:
    assert default_config("unit-7") == _parse("")
    assert default_config("u", hq_public_key="/etc/bodycam/hq.pub").hq.public_key == "/etc/bodycam/hq.pub"
    with pytest.raises(ConfigError, match="device.id"):
        default_config("not valid!")


def test_types_of_floats_are_floats_even_when_written_as_integers() -> None:
    c = _parse("[recording]\npre_event_s = 12\n")
    assert c.recording.pre_event_s == 12.0 and isinstance(c.recording.pre_event_s, float)


def test_explicit_cameras_replace_the_default_and_empty_means_none() -> None:
    c = _parse('[cameras.helmet]\ndriver = "picamera2"\noptions = { index = 1 }\n[cameras.chest]\nenabled = false\n')
    assert list(c.cameras) == ["chest", "helmet"]
    assert c.cameras["helmet"].driver == "picamera2" and c.cameras["helmet"].options == {"index": 1}
    assert c.cameras["chest"] == CameraConfig("sim", False)
    assert dict(_parse("[cameras]\n").cameras) == {}


def test_sensor_sections_and_options_pass_through() -> None:
    c = _parse('[thermal]\ndriver = "lepton"\nenabled = false\n[thermal.options]\nspi = "/dev/spidev0.0"\n'
               "anything_goes = [1, 2, { deep = true }]\n")
    assert c.thermal.driver == "lepton" and not c.thermal.enabled
    assert c.thermal.options["spi"] == "/dev/spidev0.0"
    assert c.thermal.options["anything_goes"] == (1, 2, {"deep": True})


def test_config_is_immutable() -> None:
    c = _parse('[gnss.options]\nx = { y = [1] }\n')
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.device = DeviceConfig("other")  # type: ignore[misc]
    with pytest.raises(TypeError):
        c.gnss.options["x"] = 1  # type: ignore[index]
    with pytest.raises(TypeError):
        c.cameras["new"] = CameraConfig()  # type: ignore[index]
    inner = c.gnss.options["x"]
    assert isinstance(inner, types.MappingProxyType) and inner["y"] == (1,)


def test_resolve_path() -> None:
    assert resolve_path("/data", "hq.pub") == Path("/data/hq.pub")
    assert resolve_path(Path("/data"), "/etc/hq.pub") == Path("/etc/hq.pub")


# ---- bounds, types, choices -----------------------------------------------------------------

# (section text, key path, fragment of the message)
BAD = [
    ('[recording]\npre_event_s = 150\n', "recording.pre_event_s", "150 is out of range 0..120"),
    ('[recording]\npre_event_s = -1\n', "recording.pre_event_s", "out of range"),
    ('[recording]\npre_event_s = "30"\n', "recording.pre_event_s", "expected a number"),
    ('[recording]\npre_event_s = nan\n', "recording.pre_event_s", "not a finite number"),
    ('[recording]\npre_event_s = true\n', "recording.pre_event_s", "expected a number"),
    ('[recording]\npre_event_audio = 1\n', "recording.pre_event_audio", "expected true or false"),
    ('[recording]\nvideo_bitrate_bps = 99999\n', "recording.video_bitrate_bps",
     "99999 is out of range 100000..50000000"),
    ('[recording]\nvideo_bitrate_bps = 50000001\n', "recording.video_bitrate_bps", "out of range"),
    ('[recording]\nvideo_bitrate_bps = 4e6\n', "recording.video_bitrate_bps", "expected an integer"),
    ('[recording]\nkeyframe_interval_s = 0.1\n', "recording.keyframe_interval_s", "out of range 0.2..10"),
    ('[recording]\nkeyframe_interval_s = 10.5\n', "recording.keyframe_interval_s", "out of range"),
    ('[recording]\nkeyframe_interval_s = 5\n[evidence]\nsegment_s = 4\n', "recording.keyframe_interval_s",
     "exceeds evidence.segment_s"),
    ('[recording]\naudio_codec = "mp3"\n', "recording.audio_codec", "not one of 'opus', 'aac'"),
    ('[recording]\naudio_bitrate_bps = 1000\n', "recording.audio_bitrate_bps", "out of range"),
    ('[recording]\naudio_bitrate_bps = 600000\n', "recording.audio_bitrate_bps", "out of range"),
    ('[evidence]\nprofile = "nsa"\n', "evidence.profile", "not one of"),
    ('[evidence]\nchunk_bytes = 65535\n', "evidence.chunk_bytes", "out of range"),
    ('[evidence]\nchunk_bytes = 16777217\n', "evidence.chunk_bytes", "out of range"),
    ('[evidence]\nflush_interval_s = 0.04\n', "evidence.flush_interval_s", "out of range 0.05..5"),
    ('[evidence]\nflush_interval_s = 5.1\n', "evidence.flush_interval_s", "out of range"),
    ('[evidence]\nsegment_s = 1.9\n', "evidence.segment_s", "out of range 2..600"),
    ('[evidence]\nsegment_s = 601\n', "evidence.segment_s", "out of range"),
    ('[hq]\npublic_key = ""\n', "hq.public_key", "must not be empty"),
    ('[hq]\npublic_key = 5\n', "hq.public_key", "expected a string"),
    ('[hq]\nurl = "ftp://hq"\n', "hq.url", "not an http(s) URL"),
    ('[hq]\nurl = "https://"\n', "hq.url", "not an http(s) URL"),
    ('[hq]\nca = "a\\u0000b"\n', "hq.ca", "NUL"),
    ('[console]\nbaud = 12345\n', "console.baud", "12345 is not one of 1200,"),
    ('[console]\ndevice = 0\n', "console.device", "expected a string"),
    ('[console]\ntechnician_keys = "alice.pub"\n', "console.technician_keys", "expected an array of strings"),
    ('[console]\ntechnician_keys = ["a.pub", 3]\n', "console.technician_keys", "expected an array of strings"),
    ('[console]\ntechnician_keys = [""]\n', "console.technician_keys", "entry 0 is empty"),
    ('[console]\ntechnician_ca = 1\n', "console.technician_ca", "expected a string"),
    ('[console]\nlogin_required_for_read = "no"\n', "console.login_required_for_read", "expected true or false"),
    ('[console]\nlockout_after = 0\n', "console.lockout_after", "out of range 1..100"),
    ('[console]\nlockout_base_s = 0\n', "console.lockout_base_s", "out of range 0.1..3600"),
    ('[console]\nlockout_max_s = 86401\n', "console.lockout_max_s", "out of range"),
    ('[console]\nlockout_base_s = 60\nlockout_max_s = 30\n', "console.lockout_max_s",
     "30 is below console.lockout_base_s (60)"),
    ('[console]\nsession_idle_s = 0.5\n', "console.session_idle_s", "out of range 1..3600"),
    ('[console]\nsession_idle_s = 3601\n', "console.session_idle_s", "out of range 1..3600"),
    ('[control]\nsocket = ""\n', "control.socket", "must not be empty"),
    ('[storage]\nwarn_free_bytes = -1\n', "storage.warn_free_bytes", "out of range"),
    ('[storage]\nreserve_free_bytes = -1\n', "storage.reserve_free_bytes", "out of range"),
    ('[storage]\nwarn_free_bytes = 10\nreserve_free_bytes = 11\n', "storage.reserve_free_bytes", "exceeds"),
    ('[storage]\ncritical_free_bytes = -1\n', "storage.critical_free_bytes", "out of range"),
    ('[storage]\nfull_free_bytes = 1.5\n', "storage.full_free_bytes", "expected an integer"),
    ('[storage]\nwarn_free_bytes = 10\ncritical_free_bytes = 11\n', "storage.critical_free_bytes",
     "11 exceeds storage.warn_free_bytes (10)"),
    ('[storage]\ncritical_free_bytes = 10\nfull_free_bytes = 11\n', "storage.full_free_bytes",
     "11 exceeds storage.critical_free_bytes (10)"),
    ('[storage]\nwarn_free_bytes = 30\nfull_free_bytes = 20\nreserve_free_bytes = 25\n',
     "storage.reserve_free_bytes", "25 exceeds storage.full_free_bytes (20)"),
    ('[storage]\nkeep_acknowledged_s = -1\n', "storage.keep_acknowledged_s", "out of range 0..31536000"),
    ('[storage]\nkeep_acknowledged_s = 31536001\n', "storage.keep_acknowledged_s", "out of range"),
    ('[storage]\nkeep_acknowledged_s = "7d"\n', "storage.keep_acknowledged_s", "expected a number"),
    ('[sync]\ninterval_s = 0.05\n', "sync.interval_s", "out of range 0.1..3600"),
    ('[sync]\nheartbeat_s = 4\n', "sync.heartbeat_s", "out of range 5..86400"),
    ('[sync]\nheartbeat_s = 86401\n', "sync.heartbeat_s", "out of range"),
    ('[sync]\nbandwidth_bps = -1\n', "sync.bandwidth_bps", "out of range"),
    ('[sync]\nbandwidth_bps = 1.5e6\n', "sync.bandwidth_bps", "expected an integer"),
    ('[sync]\nchunk_bytes = 16383\n', "sync.chunk_bytes", "out of range 16384..4194304"),
    ('[sync]\nchunk_bytes = 4194305\n', "sync.chunk_bytes", "out of range"),
    ('[sync]\nconnect_timeout_s = 0\n', "sync.connect_timeout_s", "out of range"),
    ('[sync]\nio_timeout_s = 601\n', "sync.io_timeout_s", "out of range"),
    ('[sync]\ningest_timeout_s = 0.5\n', "sync.ingest_timeout_s", "out of range"),
    ('[sync]\nbackoff_max_s = 0.5\n', "sync.backoff_max_s", "out of range"),
    ('[sync]\nrequest_deadline_s = 0\n', "sync.request_deadline_s", "out of range"),
    ('[sync]\nheartbeat_s = "1m"\n', "sync.heartbeat_s", "expected a number"),
    ('[cameras.chest]\ndriver = "no spaces"\n', "cameras.chest.driver", "is not"),
    ('[cameras.chest]\nenabled = "yes"\n', "cameras.chest.enabled", "expected true or false"),
    ('[cameras.chest]\noptions = 3\n', "cameras.chest.options", "expected a table"),
    ('[cameras.chest]\nencoder = "x265"\n', "cameras.chest.encoder", "is not one of 'auto', 'libx264'"),
    ('[cameras.chest]\nencoder = 1\n', "cameras.chest.encoder", "expected a string"),
    ('[cameras.chest]\nencoder_threads = 17\n', "cameras.chest.encoder_threads", "out of range 0..16"),
    ('[cameras.chest]\nencoder_threads = -1\n', "cameras.chest.encoder_threads", "out of range"),
    ('[thermal]\nencoder = "libx264"\n', "thermal.encoder", "unknown key"),
    ('[cameras.Chest]\n', "cameras.Chest", "instance name"),
    (f'[cameras.{"c" * 33}]\n', "cameras." + "c" * 33, "instance name"),
    ('[cameras]\ndriver = "sim"\n', "cameras.driver", "expected a table"),
    ('cameras = 1\n', "cameras", "expected a table"),
    ('[power]\nenabled = 0\n', "power.enabled", "expected true or false"),
    ('[inputs]\ndriver = ""\n', "inputs.driver", "is not"),
]


@pytest.mark.parametrize(("text", "key", "fragment"), BAD, ids=[b[1] + ":" + b[2][:20] for b in BAD])
def test_bad_values_are_rejected_by_key(text: str, key: str, fragment: str) -> None:
    err = _error(text)
    assert err.key == key
    assert str(err).startswith(f"{key}: ")
    assert fragment in str(err)
    assert "test.toml" in str(err)


GOOD_EDGES = [
    "[recording]\npre_event_s = 0\n",
    "[recording]\npre_event_s = 120\n",
    "[recording]\nvideo_bitrate_bps = 100000\n",
    "[recording]\nvideo_bitrate_bps = 50000000\n",
    "[recording]\nkeyframe_interval_s = 0.2\n",
    "[recording]\nkeyframe_interval_s = 10\n[evidence]\nsegment_s = 10\n",
    "[evidence]\nchunk_bytes = 65536\n",
    "[evidence]\nchunk_bytes = 16777216\n",
    "[evidence]\nflush_interval_s = 0.05\n",
    "[evidence]\nflush_interval_s = 5\n",
    "[evidence]\nsegment_s = 2\n[recording]\nkeyframe_interval_s = 2\n",
    "[evidence]\nsegment_s = 600\n",
    '[evidence]\nprofile = "fips"\n',
    '[recording]\naudio_codec = "aac"\n',
    *[f'[cameras.chest]\nencoder = "{e}"\nencoder_threads = 0\n' for e in VIDEO_ENCODERS],
    "[cameras.chest]\nencoder_threads = 16\n",
    '[hq]\nurl = "https://hq.example.org:8443/api"\nca = "ca.pem"\n',
    "[storage]\nwarn_free_bytes = 0\nreserve_free_bytes = 500\n",
    "[storage]\nwarn_free_bytes = 0\ncritical_free_bytes = 5\nfull_free_bytes = 0\nreserve_free_bytes = 5\n",
    "[storage]\nwarn_free_bytes = 4\ncritical_free_bytes = 3\nfull_free_bytes = 2\nreserve_free_bytes = 1\n",
    "[storage]\nkeep_acknowledged_s = 0\n",
    "[storage]\nkeep_acknowledged_s = 31536000\n",
    "[sync]\ninterval_s = 0.1\nheartbeat_s = 5\nbandwidth_bps = 0\nchunk_bytes = 16384\n",
    "[sync]\ninterval_s = 3600\nheartbeat_s = 86400\nbandwidth_bps = 10000000000\nchunk_bytes = 4194304\n",
    "[sync]\nconnect_timeout_s = 0.5\nio_timeout_s = 600\ningest_timeout_s = 3600\nbackoff_max_s = 86400\n",
    *[f"[console]\nbaud = {b}\n" for b in STANDARD_BAUDS],
    '[console]\ntechnician_keys = ["alice.pub", "-----BEGIN PUBLIC KEY-----\\nMCow\\n-----END PUBLIC KEY-----"]\n',
    "[console]\nlockout_after = 1\nlockout_base_s = 0.1\nlockout_max_s = 0.1\nsession_idle_s = 1\n",
    "[console]\nlockout_after = 100\nlockout_base_s = 3600\nlockout_max_s = 86400\nsession_idle_s = 3600\n",
]


@pytest.mark.parametrize("text", GOOD_EDGES)
def test_edges_are_accepted(text: str) -> None:
    _parse(text)


@pytest.mark.parametrize(
    ("text", "key", "word"),
    [
        ("[recording]\npre_event_ss = 1\n", "recording.pre_event_ss", "unknown key"),
        ('[cameras.chest]\ndrvier = "sim"\n', "cameras.chest.drvier", "unknown key"),
        ("[hq]\nkey = 1\n", "hq.key", "unknown key"),
        ("[evidence]\nx = 1\n", "evidence.x", "unknown key"),
        ("[control]\nx = 1\n", "control.x", "unknown key"),
        ("[console]\nx = 1\n", "console.x", "unknown key"),
        ("[storage]\nx = 1\n", "storage.x", "unknown key"),
        ("[sync]\nbandwidth = 1\n", "sync.bandwidth", "unknown key"),
        ("[microphone]\nx = 1\n", "microphone.x", "unknown key"),
        ("[indicators]\noption = {}\n", "indicators.option", "unknown key"),
        ("[recordng]\npre_event_s = 1\n", "recordng", "unknown section"),
        ("verbose = true\n", "verbose", "unknown key"),
    ],
)
def test_unknown_keys_are_rejected_by_name(text: str, key: str, word: str) -> None:
    info = _error(text)
    assert info.key == key
    assert str(info).startswith(f"{key}: {word}")


def test_device_id_is_required_and_checked() -> None:
    for text, fragment in [
        ("", "device.id: required key is missing"),
        ("[device]\n", "device.id: required key is missing"),
        ('[device]\nid = ""\n', "device.id"),
        ('[device]\nid = ".."\n', "not all dots"),
        (f'[device]\nid = "{"x" * 65}"\n', "device.id"),
        ('device = "x"\n', "device: expected a table"),
        ('[device]\nid = "u"\nname = 1\n', "device.name: unknown key"),
    ]:
        with pytest.raises(ConfigError) as info:
            parse_config(text, "t")
        assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("text", "line"),
    [("[device\nid = 1\n", 1), ('[device]\nid = "x"\nid = "y"\n', 3), ('[device]\nid = "x\n', 2), ("a = \n", 1)],
)
def test_malformed_toml_names_the_line(text: str, line: int) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "unit.toml")
    assert str(info.value).startswith("unit.toml: invalid TOML")
    assert f"line {line}" in str(info.value)
    assert info.value.key == ""


def test_load_config(tmp_path: Path) -> None:
    path = tmp_path / "bodycam.toml"
    path.write_text(MINIMAL + "[recording]\npre_event_s = 5\n")
    assert load_config(path).recording.pre_event_s == 5.0
    path.write_text(MINIMAL + "[recording]\npre_event_s = 500\n")
    with pytest.raises(ConfigError, match=f"recording.pre_event_s: .*{path}"):
        load_config(path)
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.toml")
    path.write_bytes(b'[device]\nid = "\xff"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)


# ---- render / parse round trip ----------------------------------------------------------------

_text = st.text(st.characters(codec="utf-8", exclude_characters="\0"), max_size=20)
_scalar = (
    st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | _text
    | st.dates()
    | st.times()
    | st.datetimes(timezones=st.sampled_from([None, datetime.UTC]))
)
_options = st.dictionaries(
    _text,
    st.recursive(_scalar, lambda c: st.lists(c, max_size=3) | st.dictionaries(_text, c, max_size=3), max_leaves=8),
    max_size=4,
)


def _frozen(value: Any) -> Any:
    if isinstance(value, dict):
        return types.MappingProxyType({k: _frozen(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value


_sensor = st.builds(
    SensorConfig,
    driver=st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True),
    enabled=st.booleans(),
    options=_options.map(_frozen),
)


_camera = st.builds(
    CameraConfig,
    driver=st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True),
    enabled=st.booleans(),
    options=_options.map(_frozen),
    encoder=st.sampled_from(VIDEO_ENCODERS),
    encoder_threads=st.integers(0, 16),
)


@st.composite
def configs(draw: st.DrawFn) -> Config:
    segment_s = draw(st.floats(2.0, 600.0))
    # Explicit thresholds in order, each possibly 0 (derived): warn >= critical >= full >= reserve.
    explicit = sorted(draw(st.lists(st.integers(1, 2**62), min_size=4, max_size=4)), reverse=True)
    warn, critical, full, reserve = (v if draw(st.booleans()) else 0 for v in explicit)
    return Config(
        device=DeviceConfig(draw(st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True).filter(
            lambda s: set(s) != {"."}))),
        hq=HqConfig(public_key=draw(_text.filter(bool)), ca=draw(_text),
                    url=draw(st.sampled_from(["", "https://hq.example", "http://10.0.0.1:8080/x?y=1"]))),
        evidence=EvidenceConfig(
            profile=draw(st.sampled_from(["default", "fips"])),
            chunk_bytes=draw(st.integers(65536, 16_777_216)),
            flush_interval_s=draw(st.floats(0.05, 5.0)),
            segment_s=segment_s,
        ),
        recording=RecordingConfig(
            pre_event_s=draw(st.floats(0.0, 120.0)),
            pre_event_audio=draw(st.booleans()),
            video_bitrate_bps=draw(st.integers(100_000, 50_000_000)),
            keyframe_interval_s=draw(st.floats(0.2, min(10.0, segment_s))),
            audio_codec=draw(st.sampled_from(["opus", "aac"])),
            audio_bitrate_bps=draw(st.integers(6000, 512_000)),
        ),
        cameras=types.MappingProxyType(dict(sorted(draw(st.dictionaries(
            st.from_regex(r"[a-z0-9_-]{1,32}", fullmatch=True), _camera, max_size=3)).items()))),
        control=ControlConfig(draw(_text.filter(bool))),
        console=ConsoleConfig(
            draw(_text), draw(st.sampled_from(STANDARD_BAUDS)),
            technician_keys=tuple(draw(st.lists(_text.filter(bool), max_size=3))),
            technician_ca=draw(_text),
            login_required_for_read=draw(st.booleans()),
            lockout_after=draw(st.integers(1, 100)),
            lockout_base_s=draw(st.floats(0.1, 3600.0)),
            lockout_max_s=draw(st.floats(3600.0, 86400.0)),
            session_idle_s=draw(st.floats(1.0, 3600.0)),
        ),
        storage=StorageConfig(warn, critical, full, reserve, draw(st.floats(0.0, 365.0 * 86400))),
        sync=SyncConfig(
            interval_s=draw(st.floats(0.1, 3600.0)),
            heartbeat_s=draw(st.floats(5.0, 86400.0)),
            bandwidth_bps=draw(st.integers(0, 10_000_000_000)),
            chunk_bytes=draw(st.integers(16_384, 4_194_304)),
            connect_timeout_s=draw(st.floats(0.5, 300.0)),
            io_timeout_s=draw(st.floats(0.5, 600.0)),
            ingest_timeout_s=draw(st.floats(1.0, 3600.0)),
            backoff_max_s=draw(st.floats(1.0, 86400.0)),
            request_deadline_s=draw(st.floats(0.5, 3600.0)),
        ),
        **{name: draw(_sensor) for name in SENSOR_SECTIONS},
    )


@settings(max_examples=150, deadline=None)
@given(configs())
def test_render_parse_round_trip(config: Config) -> None:
    text = render_config(config)
    parsed = parse_config(text, "rendered")
    assert parsed == config
    assert render_config(parsed) == text
    assert parsed.digest == config.digest


def test_rendering_the_defaults_is_stable_text() -> None:
    text = render_config(default_config("unit-7"))
    assert text.startswith('[device]\nid = "unit-7"\n\n[hq]\npublic_key = "hq.pub"\n')
    assert ("[cameras.chest]\ndriver = \"sim\"\nenabled = true\noptions = {}\nencoder = \"auto\"\n"
            "encoder_threads = 1\n") in text
    assert render_config(_parse("[cameras]\n")).count("[cameras]") == 1


# ---- digest --------------------------------------------------------------------------------


def test_digest_is_sha256_hex_and_ignores_formatting() -> None:
    plain = _parse("")
    assert len(plain.digest) == 64 and int(plain.digest, 16) >= 0
    noisy = parse_config(
        "# a comment\n[recording]\n  pre_event_s = 30   # the default, written out\n"
        '[device]\n"id" = "unit-7"\n[cameras.chest]\n[thermal.options]\n',
        "other.toml",
    )
    assert noisy == plain and noisy.digest == plain.digest
    assert _parse("").digest == plain.digest


def test_digest_ignores_option_order() -> None:
    a = _parse("[gnss.options]\na = 1\nb = 2\n")
    b = _parse("[gnss.options]\nb = 2\na = 1\n")
    assert a.digest == b.digest


CHANGES = [
    "[hq]\nurl = \"https://x\"\n",
    "[hq]\npublic_key = \"other.pub\"\n",
    "[hq]\nca = \"ca.pem\"\n",
    "[evidence]\nprofile = \"fips\"\n",
    "[evidence]\nchunk_bytes = 131072\n",
    "[evidence]\nflush_interval_s = 1.5\n",
    "[evidence]\nsegment_s = 11\n",
    "[recording]\npre_event_s = 30.000001\n",
    "[recording]\npre_event_audio = true\n",
    "[recording]\nvideo_bitrate_bps = 4000001\n",
    "[recording]\nkeyframe_interval_s = 2\n",
    "[recording]\naudio_codec = \"aac\"\n",
    "[recording]\naudio_bitrate_bps = 64001\n",
    "[cameras.chest]\nenabled = false\n",
    "[cameras.chest]\ndriver = \"picamera2\"\n",
    "[cameras.chest]\noptions = { a = 1 }\n",
    "[cameras.chest]\nencoder = \"libx264\"\n",
    "[cameras.chest]\nencoder_threads = 2\n",
    "[cameras.helmet]\n",
    "[cameras]\n",
    *[f"[{name}]\nenabled = false\n" for name in SENSOR_SECTIONS],
    *[f"[{name}]\ndriver = \"real\"\n" for name in SENSOR_SECTIONS],
    *[f"[{name}.options]\nx = \"1\"\n" for name in SENSOR_SECTIONS],
    "[control]\nsocket = \"other.sock\"\n",
    "[console]\ndevice = \"/dev/ttyGS0\"\n",
    "[console]\nbaud = 9600\n",
    "[console]\ntechnician_keys = [\"alice.pub\"]\n",
    "[console]\ntechnician_ca = \"ca.pub\"\n",
    "[console]\nlogin_required_for_read = true\n",
    "[console]\nlockout_after = 4\n",
    "[console]\nlockout_base_s = 31\n",
    "[console]\nlockout_max_s = 901\n",
    "[console]\nsession_idle_s = 301\n",
    "[storage]\nwarn_free_bytes = 1\n",
    "[storage]\nreserve_free_bytes = 1\n",
    "[storage]\ncritical_free_bytes = 1\n",
    "[storage]\nfull_free_bytes = 1\n",
    "[storage]\nkeep_acknowledged_s = 604801\n",
    "[sync]\ninterval_s = 6\n",
    "[sync]\nheartbeat_s = 61\n",
    "[sync]\nbandwidth_bps = 1\n",
    "[sync]\nchunk_bytes = 1048577\n",
    "[sync]\nconnect_timeout_s = 11\n",
    "[sync]\nio_timeout_s = 31\n",
    "[sync]\ningest_timeout_s = 121\n",
    "[sync]\nbackoff_max_s = 301\n",
]


def test_digest_is_sensitive_to_every_key() -> None:
    base = _parse("").digest
    digests = {_parse(change).digest for change in CHANGES}
    assert base not in digests
    assert len(digests) == len(CHANGES)
    assert parse_config('[device]\nid = "unit-8"\n', "t").digest != base
    assert _parse("[gnss.options]\nx = 1\n").digest != _parse('[gnss.options]\nx = "1"\n').digest


def test_the_config_offers_every_encoder_the_selection_knows() -> None:
    from agent.media.encoder_select import CHOICES

    assert VIDEO_ENCODERS == CHOICES
