"""The clock, the simulated and replay drivers: pacing, drops, content, options, registry. No real sleeping."""

from __future__ import annotations

import itertools
import logging
import time
import wave
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from drivers.pacing import Pacer
from drivers.registry import DriverError, load_all
from drivers.replay_camera import ReplayCamera
from drivers.replay_microphone import ReplayMicrophone
from drivers.replay_thermal import ReplayThermal
from drivers.sim_camera import SimCamera
from drivers.sim_gnss import DEFAULT_TRACK, SimGnss
from drivers.sim_indicators import SimIndicators
from drivers.sim_inputs import SimInputs, parse_script
from drivers.sim_microphone import SimMicrophone
from drivers.sim_power import SimPower
from drivers.sim_thermal import SimThermal
from drivers.system_clock import STA_UNSYNC, TIME_ERROR, SystemClock, quality_from_adjtimex
from hal.clock import TimeQuality, TimeSource
from hal.common import Device, SensorError
from hal.gnss import FixMode
from hal.indicators import Indicator, Pattern
from hal.inputs import Action, Control
from tests.fakes import FakeClock

S = 1_000_000_000
TRACK_START_NS = 1_715_679_000 * S  # 2024-05-14T09:30:00Z, the shipped track's first epoch


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# --- registry and clock ---------------------------------------------------------------------------

EXPECTED = {
    ("camera", "sim"), ("camera", "replay"), ("thermal", "sim"), ("thermal", "replay"),
    ("microphone", "sim"), ("microphone", "replay"), ("gnss", "sim"), ("inputs", "sim"),
    ("indicators", "sim"), ("power", "sim"), ("clock", "system"),
}  # fmt: skip


def test_registry_has_every_driver_and_creates_them(clock: FakeClock) -> None:
    registry = load_all()
    assert {(d.kind, d.name) for d in registry} >= EXPECTED
    for kind, name in EXPECTED:
        info = registry.get(kind, name)
        assert info.summary, f"{kind}/{name} has no docstring summary"
        assert info.probe().usable
    for kind in ("camera", "thermal", "microphone", "gnss", "inputs", "indicators", "power"):
        device = registry.create(kind, "sim", name=f"{kind}0", clock=clock)
        assert isinstance(device, Device) and device.name == f"{kind}0"
    assert isinstance(registry.create("clock", "system"), SystemClock)


def test_unknown_option_is_a_driver_error_and_bad_value_names_the_option(clock: FakeClock) -> None:
    registry = load_all()
    with pytest.raises(DriverError, match="colour"):
        registry.create("camera", "sim", name="c", clock=clock, colour="red")
    with pytest.raises(ValueError, match="fps"):
        registry.create("camera", "sim", name="c", clock=clock, fps=0)
    with pytest.raises(ValueError, match="width"):
        SimCamera(name="c", clock=clock, width=641)
    with pytest.raises(ValueError, match="queue_frames"):
        SimThermal(name="t", clock=clock, queue_frames=True)
    with pytest.raises(ValueError, match="rebase_time"):
        SimGnss(name="g", clock=clock, rebase_time="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="drain_pct_per_hour"):
        SimPower(name="p", clock=clock, drain_pct_per_hour=-1)
    with pytest.raises(ValueError, match="name"):
        SimMicrophone(name="", clock=clock)


def test_system_clock_never_raises_and_sleep_zero_returns_at_once() -> None:
    c = SystemClock()
    a = c.monotonic_ns()
    c.sleep(0)
    c.sleep(-5)
    assert 0 <= c.monotonic_ns() - a < S // 2
    assert abs(c.utc_ns() - time.time_ns()) < S
    assert isinstance(c.quality(), TimeQuality)
    assert c.get_status()["name"] == "system"


def test_adjtimex_readout_maps_to_quality() -> None:
    assert quality_from_adjtimex(0, 0, 250) == TimeQuality(TimeSource.NTP, True, 250_000)
    assert quality_from_adjtimex(TIME_ERROR, 0, 250) == TimeQuality(TimeSource.RTC, False)
    assert quality_from_adjtimex(0, STA_UNSYNC, 250) == TimeQuality(TimeSource.RTC, False)
    assert quality_from_adjtimex(-1, 0, 0).synced is False


def test_fake_clock_steps_utc_without_moving_monotonic() -> None:
    c = FakeClock(start_mono_ns=10, start_utc_ns=1000)
    c.sleep(1e-9)
    c.set_utc_ns(5 * S)
    c.advance(1)
    assert (c.monotonic_ns(), c.utc_ns()) == (S + 11, 6 * S)


# --- pacing, timeouts, drops (the camera stands for every paced driver) -----------------------------


def test_read_paces_on_the_clock_and_times_out(clock: FakeClock) -> None:
    cam = SimCamera(name="cam", clock=clock, width=64, height=48, fps=30)
    cam.open()
    t0 = clock.monotonic_ns()
    first = cam.read(0)
    assert first is not None and (first.index, first.mono_ns) == (0, t0)
    assert cam.read(0) is None and clock.monotonic_ns() == t0  # polling never sleeps
    assert cam.read(0.01) is None  # frame 1 is due after 33.3 ms
    assert clock.monotonic_ns() == t0 + 10_000_000  # a timeout sleeps the whole timeout
    second = cam.read(1.0)
    assert second is not None and second.index == 1
    assert second.mono_ns == t0 + 33_333_334 == clock.monotonic_ns()  # woke exactly when due
    assert second.sensor_ns - first.sensor_ns == second.mono_ns - first.mono_ns


def test_late_consumer_drops_the_oldest_frames(clock: FakeClock) -> None:
    cam = SimCamera(name="cam", clock=clock, width=64, height=48, queue_frames=4)
    cam.open()
    assert cam.read(0) is not None
    clock.advance(1.0)  # frames 1..30 are due; the device holds only the last 4
    late = [cam.read(0) for _ in range(5)]
    assert [f.index for f in late if f] == [27, 28, 29, 30]
    assert late[0] is not None and late[0].dropped_before == 26
    assert all(f.dropped_before == 0 for f in late[1:4] if f) and late[4] is None
    status = cam.get_status()
    assert (status["delivered"], status["dropped"], status["last_error"]) == (5, 26, None)


def test_read_while_closed_raises_close_is_idempotent_and_reopen_restarts(clock: FakeClock) -> None:
    cam = SimCamera(name="cam", clock=clock, width=64, height=48)
    with pytest.raises(SensorError, match="closed"):
        cam.read(0)
    cam.open()
    clock.advance(0.1)
    assert cam.read(0) is not None
    cam.close()
    cam.close()
    assert (cam.get_status()["open"], cam.get_status()["delivered"]) == (False, 1)  # counts outlive close
    cam.open()
    frame = cam.read(0)
    assert frame is not None and frame.index == 0 and frame.dropped_before == 0


def test_pacer_schedule_is_exact_for_fractional_rates(clock: FakeClock) -> None:
    pacer = Pacer(clock, Fraction(87, 10), queue_depth=1000)
    due = [pacer.due_ns(i) - pacer.t0_ns for i in range(88)]
    assert due[87] == 10 * S  # no drift after 87 frames at 8.7 Hz
    for i in range(87):
        slot = pacer.take(1.0)
        assert slot is not None and slot.index == i and slot.due_ns - pacer.t0_ns == due[i]
    assert clock.monotonic_ns() - pacer.t0_ns == due[86]


# --- sim camera -------------------------------------------------------------------------------------


def test_camera_frames_are_yuv420p_deterministic_and_moving() -> None:
    frames = []
    for seed in (7, 7, 8):
        cam = SimCamera(name="cam", clock=FakeClock(), seed=seed)
        cam.open()
        frames.append([cam.read(1.0) for _ in range(2)])
    a0, a1 = frames[0]
    assert a0 is not None and a1 is not None
    assert a0.data.shape == (720 * 3 // 2, 1280) and a0.data.dtype == np.uint8
    assert (a0.width, a0.height, a0.pixel_format) == (1280, 720, "yuv420p")
    assert not a0.data.flags.writeable
    b0 = frames[1][0]
    c0 = frames[2][0]
    assert b0 is not None and c0 is not None
    assert np.array_equal(a0.data, b0.data)
    assert not np.array_equal(a0.data[200:700], c0.data[200:700])  # another seed, another phase
    assert not np.array_equal(a0.data[200:700], a1.data[200:700])  # the pattern moves
    assert len(np.unique(a0.data[200:400])) > 4  # bars, not a flat image


def test_camera_burns_the_utc_time_into_a_small_box(clock: FakeClock) -> None:
    cam = SimCamera(name="cam", clock=clock)
    base = cam.render(5, clock.utc_ns())
    later = cam.render(5, clock.utc_ns() + 3_600 * S)
    changed_rows, changed_cols = np.nonzero(base[:720] != later[:720])
    assert changed_rows.size > 0
    assert changed_rows.max() < 720 // 8 and changed_cols.max() < 1280 * 3 // 4


def test_camera_1080p_delivers_every_frame_at_30_fps() -> None:
    # What a 1080p frame costs to render is a figure in `make bench` (agent section,
    # sim_render_cpu_ms_per_frame), not a threshold here: this checks the frames themselves.
    clock = FakeClock()
    cam = SimCamera(name="cam", clock=clock, width=1920, height=1080, fps=30)
    cam.open()
    frames = [cam.read(1.0) for _ in range(31)]
    assert all(f is not None for f in frames)
    shown = [f for f in frames if f is not None]
    assert {(f.width, f.height) for f in shown} == {(1920, 1080)}
    assert shown[0].data.shape == (1080 * 3 // 2, 1920)
    gaps_ns = {b.mono_ns - a.mono_ns for a, b in itertools.pairwise(shown)}
    assert all(abs(g - S // 30) <= 1 for g in gaps_ns), gaps_ns
    assert not np.array_equal(shown[0].data, shown[30].data)


# --- sim thermal ------------------------------------------------------------------------------------


def test_thermal_room_with_a_warm_body_walking(clock: FakeClock) -> None:
    th = SimThermal(name="th", clock=clock, seed=3)
    th.open()
    frames = [th.read(1.0) for _ in range(40)]
    first, last = frames[0], frames[-1]
    assert first is not None and last is not None
    assert first.data.shape == (120, 160) and first.data.dtype == np.uint16
    assert th.rate_hz == pytest.approx(8.7)
    assert abs(last.mono_ns - first.mono_ns - 39 / 8.7 * S) <= 1
    assert abs(float(np.median(first.data)) - 29315) < 50  # background about 20 °C
    hottest = max(int(f.data.max()) for f in frames if f)
    assert 30615 <= hottest <= 30815  # the body's skin, about 34 °C
    assert first.fpa_temp_ck is not None and 29315 < first.fpa_temp_ck < 31315
    columns = [int(np.argmax((f.data > 30000).sum(axis=0))) for f in (frames[5], frames[35]) if f]
    assert columns[0] != columns[1]  # the body moved across the frame
    again = SimThermal(name="th", clock=FakeClock(), seed=3)
    assert np.array_equal(again.render(0), first.data)
    assert not np.array_equal(SimThermal(name="th", clock=clock, seed=4).render(0), first.data)


# --- sim microphone ---------------------------------------------------------------------------------


def test_microphone_tone_and_continuous_samples(clock: FakeClock) -> None:
    mic = SimMicrophone(name="mic", clock=clock, tone_hz=440)
    mic.open()
    chunks = [mic.read(1.0) for _ in range(50)]
    assert all(c is not None for c in chunks)
    first = chunks[0]
    assert first is not None
    assert first.samples.shape == (960, 1) and first.samples.dtype == np.int16
    assert (mic.sample_rate_hz, mic.channels, first.sample_rate_hz) == (48_000, 1, 48_000)
    assert [c.first_sample for c in chunks if c] == [i * 960 for i in range(50)]
    signal = np.concatenate([c.samples[:, 0] for c in chunks if c]).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(signal))
    assert np.argmax(spectrum) * 48_000 / signal.size == pytest.approx(440, abs=1)
    assert 0.2 * 32767 < np.abs(signal).max() < 0.35 * 32767


def test_microphone_overrun_reports_lost_samples_and_is_deterministic(clock: FakeClock) -> None:
    mic = SimMicrophone(name="mic", clock=clock, seed=5)
    mic.open()
    assert mic.read(0) is not None
    clock.advance(2.0)
    late = mic.read(0)
    assert late is not None
    assert late.dropped_before == late.first_sample - 960 > 0
    assert late.dropped_before % 960 == 0
    assert mic.get_status()["dropped_samples"] == late.dropped_before
    other = SimMicrophone(name="mic", clock=FakeClock(), seed=5)
    assert np.array_equal(other.render(late.index), late.samples)
    assert not np.array_equal(SimMicrophone(name="m", clock=clock, seed=6).render(late.index), late.samples)


# --- sim gnss ---------------------------------------------------------------------------------------


def test_gnss_starts_without_a_fix_and_rebases_time(clock: FakeClock) -> None:
    gnss = SimGnss(name="gnss", clock=clock, rebase_time=True)
    gnss.open()
    utc0 = clock.utc_ns()
    fixes = [gnss.read(1.5) for _ in range(12)]
    assert all(f is not None for f in fixes)
    assert [f.mode for f in fixes[:3] if f] == [FixMode.NO_FIX] * 3
    assert all(f.utc_ns is None and f.lat_deg is None for f in fixes[:3] if f)
    with_fix = [i for i, f in enumerate(fixes) if f and f.mode is not FixMode.NO_FIX]
    assert 3 <= with_fix[0] <= 10
    t0 = clock.monotonic_ns() - 11 * S
    for i, f in enumerate(fixes):
        assert f is not None and f.mono_ns == t0 + i * S
        if f.utc_ns is not None:
            assert f.utc_ns == utc0 + i * S
    fix = fixes[-1]
    assert fix is not None and fix.lat_deg == pytest.approx(51.92, abs=0.01) and fix.h_acc_m


def test_gnss_real_time_and_looping(clock: FakeClock) -> None:
    gnss = SimGnss(name="gnss", clock=clock)
    gnss.open()
    t0 = clock.monotonic_ns()
    first = [gnss.read(1.5) for _ in range(10)]
    assert first[5] is not None and first[5].utc_ns == TRACK_START_NS + 5 * S
    clock.advance(600)
    second_lap = None
    while second_lap is None or second_lap.mono_ns < t0 + 609 * S:
        second_lap = gnss.read(1.5)
    assert second_lap.mono_ns == t0 + 609 * S
    assert second_lap.utc_ns == TRACK_START_NS + 609 * S  # time keeps going through the loop
    assert first[9] is not None and second_lap.lat_deg == first[9].lat_deg
    assert gnss.get_status()["epochs"] == 600


def test_gnss_other_file_skips_garbage_and_may_end(clock: FakeClock, tmp_path: Path) -> None:
    track = tmp_path / "short.nmea"
    lines = [line for line in DEFAULT_TRACK.read_text().splitlines() if not line.startswith("#")]
    track.write_text("\n".join(lines[40:48] + ["$GPRMC,garbage*00"]) + "\n")  # epochs 10 and 11
    gnss = SimGnss(name="g", clock=clock, path=str(track), loop=False)
    gnss.open()
    assert gnss.get_status()["bad_lines"] == 1
    got = [gnss.read(1.5) for _ in range(3)]
    assert got[0] is not None and got[1] is not None and got[2] is None
    assert got[0].mode is FixMode.FIX_3D
    missing = SimGnss(name="g", clock=clock, path=str(tmp_path / "none.nmea"))
    with pytest.raises(SensorError, match="none.nmea"):
        missing.open()
    assert "none.nmea" in str(missing.get_status()["last_error"])


# --- sim inputs -------------------------------------------------------------------------------------


def test_input_script_parses_and_sorts() -> None:
    assert parse_script(" 12:mark , 5:record,20.5:record:long-press,") == [
        (5.0, Control.RECORD, Action.PRESS),
        (12.0, Control.MARK, Action.PRESS),
        (20.5, Control.RECORD, Action.LONG_PRESS),
    ]
    assert parse_script("") == []


@pytest.mark.parametrize(
    ("script", "message"),
    [
        ("5:recrod", r"entry 1 '5:recrod': unknown control 'recrod' \(known: record, mark"),
        ("5:record,x:mark", r"entry 2 'x:mark': 'x' is not a number"),
        ("-1:mark", "finite number >= 0"),
        ("inf:mark", "finite number >= 0"),
        ("5", "expected seconds:control"),
        ("5:mark:tap", "unknown action 'tap'"),
        ("1:2:3:4", "expected seconds:control"),
    ],
)
def test_bad_input_scripts_are_rejected_with_a_clear_message(clock: FakeClock, script: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        SimInputs(name="in", clock=clock, script=script)
    assert str(info.value).startswith("script: entry ")


def test_inputs_fire_at_their_times(clock: FakeClock) -> None:
    inputs = SimInputs(name="in", clock=clock, script="5:record,12:mark,12:mark,40:record")
    inputs.open()
    t0 = clock.monotonic_ns()
    assert inputs.read(1.0) is None and clock.monotonic_ns() == t0 + S
    event = inputs.read(10.0)
    assert event is not None and (event.control, event.action) == (Control.RECORD, Action.PRESS)
    assert event.mono_ns == t0 + 5 * S == clock.monotonic_ns()
    marks = [inputs.read(10.0), inputs.read(0)]
    assert [m.control for m in marks if m] == [Control.MARK, Control.MARK]
    assert all(m is not None and m.mono_ns == t0 + 12 * S for m in marks)
    inputs.inject(Control.STEALTH, Action.LONG_PRESS)
    injected = inputs.read(0)
    assert injected is not None and injected.control is Control.STEALTH
    last = inputs.read(100.0)
    assert last is not None and last.mono_ns == t0 + 40 * S
    assert inputs.read(1.0) is None
    assert inputs.get_status()["delivered"] == 5


def test_inputs_from_a_script_file(clock: FakeClock, tmp_path: Path) -> None:
    path = tmp_path / "presses.txt"
    path.write_text("# a shift\n1:signal\n\n2:mark  # second\n")
    inputs = SimInputs(name="in", clock=clock, script_file=str(path))
    assert [(t, c) for t, c, _ in inputs.script] == [(1.0, Control.SIGNAL), (2.0, Control.MARK)]
    path.write_text("1:signal\n2:nope\n")
    with pytest.raises(ValueError, match="script_file .*presses.txt: entry 2 '2:nope'"):
        SimInputs(name="in", clock=clock, script_file=str(path))
    with pytest.raises(ValueError, match="script_file: cannot read"):
        SimInputs(name="in", clock=clock, script_file=str(tmp_path / "none"))
    with pytest.raises(ValueError, match="not both"):
        SimInputs(name="in", clock=clock, script="1:mark", script_file=str(path))


# --- sim indicators and power -----------------------------------------------------------------------


def test_indicators_remember_and_log_changes(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    ind = SimIndicators(name="leds", clock=clock)
    ind.open()
    assert set(ind.state().values()) == {Pattern.OFF}
    with caplog.at_level(logging.INFO, logger="drivers.sim_indicators"):
        ind.set(Indicator.RECORDING_LED, Pattern.BLINK)
        ind.set(Indicator.RECORDING_LED, Pattern.BLINK)  # no change, no log
        ind.set(Indicator.HAPTIC, Pattern.PULSE)
    assert ind.state()[Indicator.RECORDING_LED] is Pattern.BLINK
    assert [r.getMessage() for r in caplog.records] == ["leds: recording-led -> blink", "leds: haptic -> pulse"]
    assert ind.get_status()["changes"] == 2 and ind.get_status()["recording-led"] == "blink"
    snapshot = ind.state()
    snapshot[Indicator.STATUS_LED] = Pattern.ON
    assert ind.state()[Indicator.STATUS_LED] is Pattern.OFF


def test_power_drains_charges_and_stays_in_range(clock: FakeClock) -> None:
    power = SimPower(name="bat", clock=clock, start_pct=50)
    with pytest.raises(SensorError):
        power.read()
    power.open()
    clock.advance(1800)
    status = power.read()
    assert status.battery_pct == pytest.approx(44.0)
    assert not status.charging and status.temperature_c is not None and 34 < status.temperature_c < 36
    power.set_charging(True)
    clock.advance(3600)
    assert power.read().battery_pct == pytest.approx(84.0) and power.read().external_power
    clock.advance(3600)
    assert power.read().battery_pct == 100.0 and not power.read().charging  # full: no longer charging
    power.set_charging(False)
    clock.advance(20 * 3600)
    assert power.read().battery_pct == 0.0


# --- replay drivers ---------------------------------------------------------------------------------


def _make_video(path: Path, frames: int = 12, fps: int = 10) -> list[int]:
    import av

    levels = [30 + 15 * i for i in range(frames)]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for level in levels:
            image = np.full((48, 64, 3), level, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return levels


def _luma(frame_data: np.ndarray) -> float:
    return float(frame_data[:48].mean())


def test_replay_camera_plays_at_native_rate_and_loops(clock: FakeClock, tmp_path: Path) -> None:
    video = tmp_path / "clip.mp4"
    _make_video(video)
    cam = ReplayCamera(name="replay", clock=clock, path=str(video))
    assert (cam.format.width, cam.format.height, cam.format.fps) == (64, 48, 10)
    cam.open()
    t0 = clock.monotonic_ns()
    frames = [cam.read(1.0) for _ in range(14)]
    assert all(f is not None for f in frames)
    assert [f.index for f in frames if f] == list(range(14))
    assert frames[13] is not None and frames[13].mono_ns == t0 + 13 * S // 10
    assert frames[0] is not None and frames[0].data.shape == (72, 64)
    lumas = [_luma(f.data) for f in frames if f]
    assert all(b > a + 5 for a, b in zip(lumas[:11], lumas[1:12], strict=True))  # the file's order
    assert lumas[12] == pytest.approx(lumas[0], abs=3) and lumas[13] == pytest.approx(lumas[1], abs=3)  # looped
    assert frames[12] is not None and frames[11] is not None and frames[12].sensor_ns > frames[11].sensor_ns
    assert cam.get_status()["laps"] == 1
    clock.advance(1.0)
    late = cam.read(0)
    assert late is not None and (late.index, late.dropped_before) == (20, 6)  # 14..23 due, 4 kept
    cam.close()


def test_replay_camera_without_loop_ends_and_bad_paths_are_config_errors(clock: FakeClock, tmp_path: Path) -> None:
    video = tmp_path / "clip.mp4"
    _make_video(video, frames=3)
    cam = ReplayCamera(name="replay", clock=clock, path=video, loop=False)
    cam.open()
    assert [cam.read(1.0) is not None for _ in range(4)] == [True, True, True, False]
    assert cam.read(1.0) is None and cam.get_status()["ended"] is True
    with pytest.raises(ValueError, match="^path: no video file"):
        ReplayCamera(name="replay", clock=clock, path=str(tmp_path / "none.mp4"))
    (tmp_path / "junk.mp4").write_bytes(b"not a video at all" * 10)
    with pytest.raises(ValueError, match="^path: "):
        ReplayCamera(name="replay", clock=clock, path=str(tmp_path / "junk.mp4"))
    assert ReplayCamera.probe().usable


def _make_wav(path: Path, rate: int, samples: np.ndarray, width: int = 2) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(samples.shape[1])
        wav.setsampwidth(width)
        wav.setframerate(rate)
        wav.writeframes(samples.astype("<i2").tobytes() if width == 2 else samples.astype(np.uint8).tobytes())


def test_replay_microphone_plays_the_file_and_loops(clock: FakeClock, tmp_path: Path) -> None:
    samples = np.arange(-3000, 3000, 7, dtype=np.int16).reshape(-1, 2)  # 429 stereo frames
    path = tmp_path / "a.wav"
    _make_wav(path, 16_000, samples)
    mic = ReplayMicrophone(name="rmic", clock=clock, path=str(path), chunk_ms=10)
    assert (mic.sample_rate_hz, mic.channels) == (16_000, 2)
    mic.open()
    chunks = [mic.read(1.0) for _ in range(6)]
    assert all(c is not None and c.samples.shape == (160, 2) for c in chunks)
    played = np.concatenate([c.samples for c in chunks if c])
    expected = np.concatenate([samples, samples, samples])[:960]
    assert np.array_equal(played, expected)
    first, sixth = chunks[0], chunks[5]
    assert first is not None and sixth is not None and sixth.mono_ns - first.mono_ns == 50_000_000
    clock.advance(2.0)
    late = mic.read(0)
    assert late is not None and late.dropped_before > 0 and late.dropped_before % 160 == 0
    assert late.first_sample == late.index * 160


def test_replay_microphone_without_loop_ends_with_a_short_chunk(clock: FakeClock, tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    _make_wav(path, 8000, np.ones((200, 1), dtype=np.int16))
    mic = ReplayMicrophone(name="rmic", clock=clock, path=path, loop=False, chunk_ms=20)
    mic.open()
    sizes = [c.samples.shape[0] if c else None for c in (mic.read(1.0) for _ in range(3))]
    assert sizes == [160, 40, None]
    _make_wav(tmp_path / "b.wav", 8000, np.ones((20, 1)), width=1)
    with pytest.raises(ValueError, match="^path: .*16-bit"):
        ReplayMicrophone(name="rmic", clock=clock, path=tmp_path / "b.wav")


def test_replay_thermal_reads_raw_frames(clock: FakeClock, tmp_path: Path) -> None:
    frames = np.stack([np.full((3, 4), 29000 + i, dtype=np.uint16) for i in range(3)])
    path = tmp_path / "t.raw"
    path.write_bytes(frames.astype("<u2").tobytes())
    th = ReplayThermal(name="rth", clock=clock, path=str(path), width=4, height=3, rate_hz=9)
    th.open()
    got = [th.read(1.0) for _ in range(4)]
    assert [int(f.data[0, 0]) for f in got if f] == [29000, 29001, 29002, 29000]
    first, second = got[0], got[1]
    assert first is not None and second is not None and second.data.shape == (3, 4)
    assert second.mono_ns - first.mono_ns == -(-S // 9)  # due times round up to the next nanosecond
    path.write_bytes(b"\x00" * 25)
    bad = ReplayThermal(name="rth", clock=clock, path=str(path), width=4, height=3)
    with pytest.raises(SensorError, match="not a positive multiple of 24 bytes"):
        bad.open()


def test_sim_thermal_injects_one_failure_when_asked() -> None:
    from drivers.sim_thermal import SimThermal
    from hal.common import SensorError

    clock = FakeClock()
    cam = SimThermal(name="thermal", clock=clock, fail_after_s=2.0)
    cam.open()
    assert cam.read(1.0) is not None
    clock.advance(2.0)
    with pytest.raises(SensorError, match="simulated sensor fault"):
        cam.read(1.0)
    cam.close()
    cam.open()
    clock.advance(5.0)
    assert cam.read(1.0) is not None  # once only: after the reopen it delivers again
