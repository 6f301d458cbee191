"""Every setting of the unit, declared once: its type, default, bounds, documentation and whether
a technician may change it over the console.

Each section is a frozen dataclass whose fields are declared with :func:`setting` (or
:func:`required`): the annotation is the type, the rest lives in the field's :class:`Spec`. The
reader (``agent.config.reader``), the README table and the console's settable keys
(``agent.config.table``) are all derived from these fields, so adding a setting is one edit here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

SENSOR_SECTIONS = ("thermal", "microphone", "gnss", "inputs", "indicators", "power")
STANDARD_BAUDS = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)
MAX_BYTES = 2**62  # any real disk; keeps values inside SQLite's and TOML's 64-bit integers
DAY_S = 86400
STORAGE_THRESHOLD_KEYS = ("warn_free_bytes", "critical_free_bytes", "full_free_bytes", "reserve_free_bytes")

DEVICE_ID = re.compile(r"(?!\.+$)[A-Za-z0-9._-]{1,64}")  # not "." or "..": ids become path names
INSTANCE = re.compile(r"[a-z0-9_-]{1,32}")
DRIVER = re.compile(r"[A-Za-z0-9._-]{1,64}")

T = TypeVar("T")


class ConfigError(Exception):
    """The configuration is unusable. ``key`` is the dotted path of the offending key ("" for
    file-level problems); the message starts with it."""

    def __init__(self, key: str, problem: str, source: str = "") -> None:
        if key:
            message = f"{key}: {problem}" + (f" (in {source})" if source else "")
        else:
            message = f"{source}: {problem}" if source else problem
        super().__init__(message)
        self.key = key
        self.problem = problem
        self.source = source


@dataclass(frozen=True, slots=True)
class Spec:
    """How one setting is read and documented. ``minval``/``maxval`` bound numbers; ``choices``
    lists the allowed values; ``pattern`` (described by ``described``) constrains strings;
    ``kind`` is "url" for an http(s) URL and "table" for a table passed through unchecked;
    ``settable``: a technician may change it over the console (tuning that cannot weaken the
    evidence); ``shown``: how the README writes the range when the bounds alone do not say it."""

    doc: str
    minval: int | float | None = None
    maxval: int | float | None = None
    choices: tuple[object, ...] = ()
    pattern: re.Pattern[str] | None = None
    described: str = ""
    nonempty: bool = False
    kind: str = ""
    settable: bool = False
    shown: str = ""


def setting(default: T, doc: str, **spec: Any) -> T:
    """A field with a default; its annotation is its type (see :class:`Spec` for ``spec``)."""
    if isinstance(default, Mapping):
        frozen = types.MappingProxyType(dict(default))
        return field(default_factory=lambda: frozen, metadata={"spec": Spec(doc, **spec)})  # type: ignore[return-value]
    return field(default=default, metadata={"spec": Spec(doc, **spec)})


def required(doc: str, **spec: Any) -> Any:
    """A field the file must give (no default)."""
    return field(metadata={"spec": Spec(doc, **spec)})


def fmt_bound(value: float) -> str:
    """Bounds as people write them: 120 not 120.0, 50000000 not 5e+07."""
    return str(value) if isinstance(value, int) else f"{value:g}"


def spec_of(f: dataclasses.Field[Any]) -> Spec:
    spec: Spec = f.metadata["spec"]
    return spec


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    id: str = required("this unit's identity, as headquarters enrolled it", pattern=DEVICE_ID,
                       described="1-64 of A-Za-z0-9._- (not all dots)")


@dataclass(frozen=True, slots=True)
class HqConfig:
    public_key: str = setting("hq.pub", "headquarters' public key file (encryption and receipts)", nonempty=True)
    url: str = setting("", "headquarters' base URL; empty: no uploads", kind="url")
    ca: str = setting("", "CA bundle for headquarters' TLS certificate; empty: the system's")


@dataclass(frozen=True, slots=True)
class EvidenceConfig:
    profile: str = setting("default", "cryptographic profile", choices=("default", "fips"))
    chunk_bytes: int = setting(65536, "encryption chunk size", minval=65536, maxval=16_777_216,
                               shown="64 KiB..16 MiB")
    flush_interval_s: float = setting(1.0, "checkpoint interval: what a power cut can lose", minval=0.05, maxval=5.0)
    segment_s: float = setting(10.0, "length of one evidence segment", minval=2.0, maxval=600.0, settable=True)


@dataclass(frozen=True, slots=True)
class RecordingConfig:
    pre_event_s: float = setting(30.0, "seconds kept before a recording starts", minval=0.0, maxval=120.0,
                                 settable=True)
    pre_event_audio: bool = setting(False, "audio in the pre-event buffer too", settable=True)
    video_bitrate_bps: int = setting(4_000_000, "video bitrate", minval=100_000, maxval=50_000_000, settable=True)
    keyframe_interval_s: float = setting(1.0, "at most evidence.segment_s", minval=0.2, maxval=10.0)
    audio_codec: str = setting("opus", "audio codec", choices=("opus", "aac"))
    audio_bitrate_bps: int = setting(64000, "audio bitrate", minval=6000, maxval=512_000)


@dataclass(frozen=True, slots=True)
class SensorConfig:
    """One sensor instance. ``options`` is passed to the driver (read-only, nested tables as
    read-only mappings, arrays as tuples); the options a driver does not take are refused with
    their dotted key when the unit is built (``agent.unit``)."""

    driver: str = setting("sim", "driver name (`bodycam drivers` lists them)", pattern=DRIVER)
    enabled: bool = setting(True, "false: the sensor is not used")
    options: Mapping[str, object] = setting({}, "the driver's own options (docs/hardware.md)", kind="table")


@dataclass(frozen=True, slots=True)
class ControlConfig:
    socket: str = setting("ctl.sock", "the control socket `bodycam ctl` talks to", nonempty=True)


@dataclass(frozen=True, slots=True)
class ConsoleConfig:
    """The technician console on a serial line (``agent.console``); off while ``device`` is empty.

    ``technician_keys``: Ed25519 public keys that may log in, each a PEM file (relative paths
    are relative to the data dir) or the PEM text itself. ``technician_ca``: headquarters'
    technician-signing public key (file or PEM text; empty: none); a technician whose
    certificate it signed for this unit may log in too. After ``lockout_after`` failed logins in
    a row the line refuses logins for ``lockout_base_s``, doubling with each further failure up
    to ``lockout_max_s``; the count is kept in the data dir across restarts. A login ends on
    logout, after ``session_idle_s`` without a command from its holder, or when the line drops.
    """

    device: str = setting("", "serial device of the console; empty: no console")
    baud: int = setting(115200, "the line's baud rate", choices=STANDARD_BAUDS, shown="a standard rate")
    technician_keys: tuple[str, ...] = setting((), "technician public keys (PEM files or text)")
    technician_ca: str = setting("", "headquarters' technician CA key (file or PEM); empty: none")
    login_required_for_read: bool = setting(False, "a login before status and diagnostics too", settable=True)
    lockout_after: int = setting(3, "failed logins in a row before the lockout", minval=1, maxval=100)
    lockout_base_s: float = setting(30.0, "first lockout, doubling per failure", minval=0.1, maxval=3600.0)
    lockout_max_s: float = setting(900.0, "longest lockout (at least lockout_base_s)", minval=0.1, maxval=86400.0)
    session_idle_s: float = setting(300.0, "a login ends after this long without a command", minval=1.0,
                                    maxval=3600.0, settable=True)


_THRESHOLD = "free space at which the level changes; 0: derived from the bitrate"


@dataclass(frozen=True, slots=True)
class StorageConfig:
    """Free-space thresholds (0: derived from the recording bitrate, see ``agent.storage``) and
    how long a copy of footage headquarters has acknowledged stays on the unit (0: delete it as
    soon as it is acknowledged)."""

    warn_free_bytes: int = setting(0, _THRESHOLD, minval=0, maxval=MAX_BYTES, shown="0..2^62")
    critical_free_bytes: int = setting(0, _THRESHOLD, minval=0, maxval=MAX_BYTES, shown="0..2^62")
    full_free_bytes: int = setting(0, _THRESHOLD, minval=0, maxval=MAX_BYTES, shown="0..2^62")
    reserve_free_bytes: int = setting(0, _THRESHOLD, minval=0, maxval=MAX_BYTES, shown="0..2^62")
    keep_acknowledged_s: float = setting(7.0 * DAY_S, "acknowledged footage kept this long; 0: deleted at once",
                                         minval=0, maxval=365 * DAY_S, shown="0..365 days")

    def misordered(self) -> tuple[str, str] | None:
        """(key, higher_key) when an explicit threshold exceeds an explicit one that should be
        larger (warn >= critical >= full >= reserve); None when the explicit ones are in order."""
        explicit = [(k, getattr(self, k)) for k in STORAGE_THRESHOLD_KEYS if getattr(self, k)]
        for i, (higher, higher_value) in enumerate(explicit):
            for key, value in explicit[i + 1:]:
                if value > higher_value:
                    return key, higher
        return None


@dataclass(frozen=True, slots=True)
class SyncConfig:
    """Uploads to headquarters (``agent.sync``), active when ``hq.url`` is set. After a cut at
    most one chunk is sent twice. ``request_deadline_s`` covers connect, TLS, body and answer;
    the last chunk's gets ``ingest_timeout_s`` more, a capped one the time the cap needs."""

    interval_s: float = setting(5.0, "how often an idle unit looks for new entries", minval=0.1, maxval=3600.0,
                                settable=True)
    heartbeat_s: float = setting(60.0, "a signed status to headquarters this often", minval=5.0, maxval=86400.0)
    bandwidth_bps: int = setting(0, "upload cap in bits per second; 0: none", minval=0, maxval=10_000_000_000,
                                 settable=True)
    chunk_bytes: int = setting(1_048_576, "bytes per upload request", minval=16_384, maxval=4_194_304)
    connect_timeout_s: float = setting(10.0, "TCP connect timeout", minval=0.5, maxval=300.0)
    io_timeout_s: float = setting(30.0, "timeout of any one read or write", minval=0.5, maxval=600.0)
    ingest_timeout_s: float = setting(120.0, "wait for the answer to the last chunk (headquarters verifies "
                                             "the whole file)", minval=1.0, maxval=3600.0)
    backoff_max_s: float = setting(300.0, "longest wait between retries after errors", minval=1.0, maxval=86400.0)
    request_deadline_s: float = setting(120.0, "the most one request may take in all", minval=0.5, maxval=3600.0)
    tlog_witnesses: tuple[str, ...] = setting((), "verifier keys of transparency-log witnesses "
                                              "(bodycam-hq witness vkey)")
    tlog_witness_quorum: int = setting(0, "how many of tlog_witnesses must cosign a checkpoint the unit "
                                       "accepts; 0: none", minval=0, maxval=16)


LIVE_NOTICES = ("light", "haptic", "both", "none")


@dataclass(frozen=True, slots=True)
class LiveConfig:
    """Live view (``agent.live``): a low-resolution WebRTC rendition published to headquarters
    with WHIP while an authorised operator watches. It has its own encoder, fed from the
    camera's capture through a queue that drops its oldest frame, so it never slows the
    evidence. ``notice``: how the wearer is told someone watches (stealth darkens the lights,
    never the chain record). A stream stops ``idle_stop_s`` after its last viewer leaves, after
    ``max_duration_s``, and (``stop_with_recording``) when the recording stops."""

    enabled: bool = setting(False, "true: headquarters may ask this unit for live view")
    camera: str = setting("", "the camera streamed; empty: the first one")
    width: int = setting(640, "live picture width", minval=160, maxval=1920)
    height: int = setting(360, "live picture height", minval=90, maxval=1080)
    fps: float = setting(15.0, "live frame rate", minval=1.0, maxval=30.0)
    bitrate_bps: int = setting(500_000, "starting bitrate", minval=50_000, maxval=8_000_000)
    min_bitrate_bps: int = setting(300_000, "lowest bitrate on a bad link", minval=50_000, maxval=8_000_000)
    max_bitrate_bps: int = setting(800_000, "highest bitrate on a good link", minval=50_000, maxval=8_000_000)
    keyframe_interval_s: float = setting(1.0, "a keyframe at least this often", minval=0.2, maxval=5.0)
    queue_frames: int = setting(2, "frames waiting for the live encoder; the oldest is dropped", minval=1,
                                maxval=30)
    auto_while_recording: bool = setting(False, "stream whenever recording, without a request")
    stop_with_recording: bool = setting(True, "stop streaming when the recording stops")
    max_duration_s: float = setting(1800.0, "a stream stops after this long; 0: no limit", minval=0.0,
                                    maxval=86400.0)
    idle_stop_s: float = setting(10.0, "stop this long after the last viewer left", minval=0.0, maxval=3600.0)
    notice: str = setting("both", "how the wearer is told someone watches", choices=LIVE_NOTICES)
    ice_relay_only: bool = setting(False, "media only through headquarters' TURN relay (carrier NAT)")
    audio: str = setting("off", "on: the microphone too (the recording's Opus, never while muted); policy",
                         choices=("off", "on"))


BACKGROUND_AUDIO = ("off", "on")


@dataclass(frozen=True, slots=True)
class BackgroundConfig:
    """Record after the fact: a low-resolution background recording of one camera, encrypted and
    hash-chained in its own ring (``agent.background``), kept ``keep_h`` hours and uploaded only
    when headquarters asks for a range (docs/sync-protocol.md, ``background.upload``). Off by
    default: turning it on is a policy decision. Audio is a second one (``audio = "on"``: the
    microphone's packets as the recording encodes them), and never while the unit is muted."""

    enabled: bool = setting(False, "record in the background, kept on the unit for keep_h hours")
    camera: str = setting("", "the camera to record (default: the first enabled one)",
                          pattern=re.compile(r"[a-z0-9_-]{0,32}"), described="a camera name or empty")
    width: int = setting(848, "picture width (even)", minval=64, maxval=1920)
    height: int = setting(480, "picture height (even)", minval=64, maxval=1080)
    fps: int = setting(10, "frames per second kept of the camera's", minval=1, maxval=30)
    bitrate_bps: int = setting(300_000, "H.264 bitrate", minval=50_000, maxval=4_000_000)
    keep_h: float = setting(72.0, "hours kept in the ring (storage pressure frees it sooner)", minval=0.01,
                            maxval=24.0 * 30)
    segment_s: float = setting(60.0, "seconds per ring file", minval=2.0, maxval=600.0)
    audio: str = setting("off", "on: the microphone too (never while muted); needs [microphone] enabled",
                         choices=BACKGROUND_AUDIO)


# The H.264 encoders a camera may ask for; "auto" probes the hardware ones first (agent.media.encoder_select).
VIDEO_ENCODERS = ("auto", "libx264", "picamera2", "h264_v4l2m2m")


@dataclass(frozen=True, slots=True)
class CameraConfig(SensorConfig):
    """A visible camera: a sensor plus how its H.264 is made. ``encoder_threads`` is libx264's
    thread count (0: FFmpeg picks one per core); a hardware encoder ignores it."""

    encoder: str = setting("auto", "H.264 encoder; auto: the camera's own (picamera2) or the board's V4L2 "
                           "one where it opens and forces keyframes, else libx264", choices=VIDEO_ENCODERS)
    encoder_threads: int = setting(1, "libx264 threads; 0: one per core", minval=0, maxval=16)


def _default_cameras() -> Mapping[str, CameraConfig]:
    return types.MappingProxyType({"chest": CameraConfig()})


@dataclass(frozen=True, slots=True)
class Config:
    """The whole unit configuration. Immutable; ``digest`` identifies it in evidence manifests."""

    device: DeviceConfig
    hq: HqConfig
    evidence: EvidenceConfig
    recording: RecordingConfig
    cameras: Mapping[str, CameraConfig]
    thermal: SensorConfig
    microphone: SensorConfig
    gnss: SensorConfig
    inputs: SensorConfig
    indicators: SensorConfig
    power: SensorConfig
    control: ControlConfig
    console: ConsoleConfig
    storage: StorageConfig
    sync: SyncConfig = field(default_factory=SyncConfig)
    live: LiveConfig = field(default_factory=LiveConfig)
    background: BackgroundConfig = field(default_factory=BackgroundConfig)

    @property
    def digest(self) -> str:
        """SHA-256 hex of :func:`agent.config.render_config`: equal for configs that mean the same
        thing, whatever the source file's comments, ordering or omitted defaults."""
        from agent.config.writer import render_config

        return hashlib.sha256(render_config(self).encode()).hexdigest()


# The sections with one fixed table each, in file order, and their dataclasses.
SECTIONS: dict[str, type] = {
    "device": DeviceConfig, "hq": HqConfig, "evidence": EvidenceConfig, "recording": RecordingConfig,
    **dict.fromkeys(SENSOR_SECTIONS, SensorConfig),
    "control": ControlConfig, "console": ConsoleConfig, "storage": StorageConfig, "sync": SyncConfig,
    "live": LiveConfig,
    "background": BackgroundConfig,
}
