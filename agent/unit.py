"""Wiring a unit together from its config: the one module of agent/ that imports drivers/."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from agent.background.setup import background_camera
from agent.config import CameraConfig, Config, ConfigError, SensorConfig
from agent.media.audio import AudioEncoder
from agent.media.camera_h264 import CameraH264Track, KeyframeLatch
from agent.media.encoder_probe import CodecProbe
from agent.media.encoder_select import (
    CAMERA,
    EncoderProbe,
    EncoderRequest,
    ProbeResult,
    Selection,
    refusal,
    select_encoder,
)
from agent.media.encoders import ThermalEncoder, VideoEncoder
from agent.media.packets import EncodedPacket, TrackSpec
from agent.workers import SensorWorker
from drivers.registry import DriverError, Registry, load_all
from hal.audio import AudioChunk
from hal.camera import H264_ENCODER, H264Settings, VideoFormat, VideoFrame
from hal.clock import Clock
from hal.gnss import GnssFix
from hal.indicators import Indicators
from hal.inputs import InputEvent
from hal.power import Power
from hal.thermal import ThermalFrame

log = logging.getLogger(__name__)

Sink = Callable[[EncodedPacket], None]

MEDIA_STALL_S = 5.0  # a camera or microphone silent this long is reopened
GNSS_STALL_S = 30.0  # gpsd reports at least once a second, fix or not


class UnitError(Exception):
    """The config asks for a unit that cannot be built (nothing to record)."""


@dataclass
class Sensors:
    """Every device of a unit, opened by the workers (or directly for indicators and power)."""

    tracks: list[TrackSpec] = field(default_factory=list)
    anchor: str | None = None
    encoders: dict[str, VideoEncoder | CameraH264Track | ThermalEncoder | AudioEncoder] = field(default_factory=dict)
    devices: dict[str, Any] = field(default_factory=dict)
    indicators: Indicators | None = None
    power: Power | None = None
    inputs: Any = None
    gnss: Any = None
    factories: dict[str, Callable[[], Any]] = field(default_factory=dict)  # a fresh device per sensor

    def request_keyframes(self) -> None:
        for enc in self.encoders.values():
            if isinstance(enc, VideoEncoder | CameraH264Track):
                enc.request_keyframe()


def unknown_options(factory: Callable[..., Any], options: Mapping[str, object]) -> tuple[list[str], list[str]]:
    """(options ``factory`` does not take, the ones it does), from its signature."""
    params = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return [], []
    taken = sorted(n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL
                   and n not in ("self", "name", "clock"))
    return sorted(k for k in options if k not in params), taken


def _create(registry: Registry, kind: str, name: str, sc: SensorConfig, clock: Clock, sim: bool) -> Any:
    """A device for one sensor; a driver or option the config names wrongly is a ConfigError with
    the option's dotted key, like every other config mistake."""
    driver = "sim" if sim and kind != "clock" else sc.driver
    path = f"cameras.{name}" if kind == "camera" else kind
    try:
        info = registry.get(kind, driver)
    except DriverError as exc:
        raise ConfigError(f"{path}.driver", str(exc)) from exc
    unknown, taken = unknown_options(info.factory, sc.options)
    if unknown:
        raise ConfigError(f"{path}.options.{unknown[0]}", f"the {kind} driver {driver!r} takes no such option "
                          f"(it takes: {', '.join(taken) or 'none'})")
    try:
        return registry.create(kind, driver, name=name, clock=clock, **dict(sc.options))
    except (DriverError, ValueError) as exc:
        raise ConfigError(f"{path}.options", f"{kind} driver {driver!r}: {exc}") from exc


def encoder_request(config: Config, camera: CameraConfig, fmt: VideoFormat) -> EncoderRequest:
    """What a camera of this format asks of its H.264 encoder under ``config``."""
    rec = config.recording
    return EncoderRequest(fmt.width, fmt.height, fmt.fps_num, fmt.fps_den, fmt.pixel_format,
                          rec.video_bitrate_bps, max(1, round(fmt.fps * rec.keyframe_interval_s)),
                          camera.encoder_threads)


NOT_OWN_ENCODER = "this camera's driver has no H.264 encoder of its own"


class CameraProbe:
    """Answers ``select_encoder`` for one camera: the camera's own encoder (picamera2) by asking
    the camera, every other by the board's codec probe. Keeps the SPS/PPS the camera's probe found,
    which its track is declared with. ``frame_users`` name what else needs the camera's frames
    (live view, the background recording): the camera's own encoder keeps them in the ISP."""

    def __init__(self, camera: Any, request: EncoderRequest, codecs: EncoderProbe, frame_users: list[str]) -> None:
        self._camera = camera
        self._request = request
        self._codecs = codecs
        self._frame_users = frame_users
        self.header: bytes | None = None

    @property
    def settings(self) -> H264Settings:
        return H264Settings(self._request.bitrate_bps, self._request.gop_frames)

    def __call__(self, codec: str) -> ProbeResult:
        if codec != CAMERA:
            return self._codecs(codec, self._request)
        if H264_ENCODER not in getattr(self._camera, "capabilities", frozenset()):
            return ProbeResult(codec, False, f"{NOT_OWN_ENCODER} (the picamera2 driver has, on a board with the V4L2 "
                               "M2M encoder)")
        if self._frame_users:
            return ProbeResult(codec, False, f"the camera's frames are needed by {' and '.join(self._frame_users)}, "
                               "and its own encoder never hands them to Python")
        answer = self._camera.probe_h264(self.settings)
        self.header = answer.header
        return ProbeResult(codec, answer.header is not None, answer.reason)


def frame_users(config: Config, name: str) -> list[str]:
    """What besides its evidence track reads camera ``name``'s frames on its sensor thread."""
    users = []
    enabled = [n for n, c in config.cameras.items() if c.enabled]
    if config.live.enabled and (config.live.camera or (enabled[0] if enabled else "")) == name:
        users.append("live view (live.camera)")
    if config.background.enabled and background_camera(config) == name:
        users.append("the background recording (background.camera)")
    return users


def choose_encoder(config: Config, name: str, camera: Any, probe: EncoderProbe,
                   choice: str | None = None) -> tuple[Selection, CameraProbe]:
    """The encoder camera ``name`` (the device ``camera``) will use, from the board's probe (or
    would with ``choice`` instead of its configured one), and the probe that answered."""
    sc = config.cameras[name]
    answers = CameraProbe(camera, encoder_request(config, sc, camera.format), probe, frame_users(config, name))
    return select_encoder(choice or sc.encoder, answers), answers


def _encoding_camera(factory: Callable[[], Any], settings: H264Settings, latch: KeyframeLatch) -> Any:
    """A fresh device for a camera that encodes itself, set up as the first one was."""
    camera = factory()
    camera.encode_with(settings, latch.due)
    return camera


def build_sensors(config: Config, clock: Clock, sim: bool, registry: Registry | None = None,
                  probe: EncoderProbe | None = None) -> Sensors:
    """Create every configured device and its encoder. Nothing is opened yet. ``probe`` answers
    which H.264 encoders work here (default: a fresh :class:`CodecProbe`); a camera whose
    configured encoder is unusable is a ConfigError naming ``cameras.<name>.encoder``."""
    reg = registry or load_all()
    codecs: EncoderProbe = probe or CodecProbe()
    s = Sensors()
    rec = config.recording
    for name, sc in config.cameras.items():
        if not sc.enabled:
            continue
        cam = _create(reg, "camera", name, sc, clock, sim)
        s.factories[name] = functools.partial(_create, reg, "camera", name, sc, clock, sim)
        request = encoder_request(config, sc, cam.format)
        selection, answers = choose_encoder(config, name, cam, codecs)
        if selection.codec is None:
            fallback = None if sc.encoder == "auto" else choose_encoder(config, name, cam, codecs, choice="auto")[0]
            raise ConfigError(f"cameras.{name}.encoder", refusal(f"cameras.{name}.encoder", selection, fallback))
        log.info("camera %r: %s", name, selection.reason)
        enc: VideoEncoder | CameraH264Track
        if selection.codec == CAMERA and answers.header is not None:
            latch = KeyframeLatch()
            cam.encode_with(answers.settings, latch.due)
            s.factories[name] = functools.partial(_encoding_camera, s.factories[name], answers.settings, latch)
            enc = CameraH264Track(name, cam.format, answers.header, answers.settings, latch)
        else:
            enc = VideoEncoder(name, request.width, request.height, request.fps_num, request.fps_den,
                               pixel_format=request.pixel_format, bitrate_bps=request.bitrate_bps,
                               gop_frames=request.gop_frames, codec=selection.codec, threads=request.threads)
        s.devices[name], s.encoders[name] = cam, enc
        s.tracks.append(enc.spec)
        s.anchor = s.anchor or name
    if config.thermal.enabled:
        th = _create(reg, "thermal", "thermal", config.thermal, clock, sim)
        s.factories["thermal"] = functools.partial(_create, reg, "thermal", "thermal", config.thermal, clock, sim)
        rate = Fraction(th.rate_hz).limit_denominator(1000)
        tenc = ThermalEncoder("thermal", th.width, th.height, rate.numerator, rate.denominator)
        s.devices["thermal"], s.encoders["thermal"] = th, tenc
        s.tracks.append(tenc.spec)
        s.anchor = s.anchor or "thermal"
    if config.microphone.enabled:
        mic = _create(reg, "microphone", "audio", config.microphone, clock, sim)
        s.factories["audio"] = functools.partial(_create, reg, "microphone", "audio", config.microphone, clock, sim)
        codec = "libopus" if rec.audio_codec == "opus" else "aac"
        aenc = AudioEncoder("audio", mic.sample_rate_hz, mic.channels, codec=codec, bitrate_bps=rec.audio_bitrate_bps)
        s.devices["audio"], s.encoders["audio"] = mic, aenc
        s.tracks.append(aenc.spec)
        s.anchor = s.anchor or "audio"
    if config.gnss.enabled:
        s.gnss = _create(reg, "gnss", "gnss", config.gnss, clock, sim)
        s.factories["gnss"] = functools.partial(_create, reg, "gnss", "gnss", config.gnss, clock, sim)
    if config.inputs.enabled:
        s.inputs = _create(reg, "inputs", "inputs", config.inputs, clock, sim)
        s.factories["inputs"] = functools.partial(_create, reg, "inputs", "inputs", config.inputs, clock, sim)
    if config.indicators.enabled:
        s.indicators = _create(reg, "indicators", "indicators", config.indicators, clock, sim)
    if config.power.enabled:
        s.power = _create(reg, "power", "power", config.power, clock, sim)
    if not s.tracks:
        raise UnitError("no camera, thermal camera or microphone is enabled: nothing to record")
    return s


def media_handler(
    encoder: VideoEncoder | CameraH264Track | ThermalEncoder | AudioEncoder,
    post_packet: Sink,
    post_drops: Callable[[str, int, int], None],
    tap: Callable[[Any], None] | None = None,
) -> Callable[[Any], None]:
    """The per-item work of a media sensor thread: count drops, hand the item to ``tap`` (live
    view's feed, which never blocks), encode, post packets."""
    track = encoder.track

    def handle(item: VideoFrame | ThermalFrame | AudioChunk) -> None:
        if item.dropped_before:
            post_drops(track, item.dropped_before, item.mono_ns)
        if tap is not None:
            tap(item)
        for packet in encoder.encode(item):  # type: ignore[arg-type]
            post_packet(packet)

    return handle


def build_workers(
    sensors: Sensors,
    clock: Clock,
    post_packet: Sink,
    post_drops: Callable[[str, int, int], None],
    post_fix: Callable[[GnssFix], None],
    on_input: Callable[[InputEvent], None],
    on_fault: Callable[[str, str], None],
    on_recovered: Callable[[str], None],
    taps: Mapping[str, Callable[[Any], None]] | None = None,
) -> list[SensorWorker]:
    workers = [
        SensorWorker(
            name,
            sensors.devices[name],
            media_handler(sensors.encoders[name], post_packet, post_drops, (taps or {}).get(name)),
            clock,
            on_fault,
            on_recovered,
            stall_s=MEDIA_STALL_S,
        )
        for name in sensors.encoders
    ]
    if sensors.gnss is not None:
        workers.append(
            SensorWorker("gnss", sensors.gnss, post_fix, clock, on_fault, on_recovered, stall_s=GNSS_STALL_S)
        )
    if sensors.inputs is not None:
        workers.append(SensorWorker("inputs", sensors.inputs, on_input, clock, on_fault, on_recovered))
    return workers


def system_clock(registry: Registry | None = None) -> Clock:
    reg = registry or load_all()
    clock: Clock = reg.create("clock", "system")
    return clock


@dataclass(frozen=True, slots=True)
class DriverListing:
    """One row of ``bodycam drivers``: a driver, its HAL kind, and whether this machine can use it."""

    kind: str
    name: str
    summary: str
    usable: bool
    reason: str


def list_drivers(registry: Registry | None = None) -> list[DriverListing]:
    """Every registered driver with its availability here. A probe that raises is reported, not
    propagated: this is what a technician runs first on a new board."""
    reg = registry or load_all()
    rows = []
    for info in reg:
        try:
            availability = info.probe()
            usable, reason = availability.usable, availability.reason
        except Exception as exc:  # a broken vendor library must not hide the other drivers
            usable, reason = False, f"probe failed: {type(exc).__name__}: {exc}"
        rows.append(DriverListing(info.kind, info.name, info.summary, usable, reason))
    return rows


@dataclass(frozen=True, slots=True)
class EncoderListing:
    """One camera in ``bodycam drivers``: the H.264 encoder it will use (None: none) and why."""

    camera: str
    choice: str
    codec: str | None
    reason: str


def list_encoders(config: Config, registry: Registry | None = None,
                  probe: EncoderProbe | None = None) -> list[EncoderListing]:
    """The encoder each enabled camera of ``config`` would get on this board, as the agent chooses
    it. A camera whose driver cannot even be created is listed with that reason."""
    reg = registry or load_all()
    codecs: EncoderProbe = probe or CodecProbe()
    rows = []
    for name, sc in sorted(config.cameras.items()):
        if not sc.enabled:
            continue
        try:
            cam = _create(reg, "camera", name, sc, system_clock(reg), sim=False)
        except ConfigError as exc:
            rows.append(EncoderListing(name, sc.encoder, None, f"camera not created: {exc}"))
            continue
        selection, _ = choose_encoder(config, name, cam, codecs)
        rows.append(EncoderListing(name, sc.encoder, selection.codec, selection.reason))
    return rows
