"""The unit's TOML configuration: typed, bounded, unknown keys rejected, with a canonical digest."""

from __future__ import annotations

import datetime
import enum
import hashlib
import math
import os
import re
import tomllib
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

SENSOR_SECTIONS = ("thermal", "microphone", "gnss", "inputs", "indicators", "power")
STANDARD_BAUDS = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)
MAX_BYTES = 2**62  # any real disk; keeps values inside SQLite's and TOML's 64-bit integers

_DEVICE_ID = re.compile(r"(?!\.+$)[A-Za-z0-9._-]{1,64}")  # not "." or "..": ids become path names
_INSTANCE = re.compile(r"[a-z0-9_-]{1,32}")
_DRIVER = re.compile(r"[A-Za-z0-9._-]{1,64}")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


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
class DeviceConfig:
    id: str


@dataclass(frozen=True, slots=True)
class HqConfig:
    public_key: str = "hq.pub"
    url: str = ""
    ca: str = ""


@dataclass(frozen=True, slots=True)
class EvidenceConfig:
    profile: str = "default"
    chunk_bytes: int = 65536
    flush_interval_s: float = 1.0
    segment_s: float = 10.0


@dataclass(frozen=True, slots=True)
class RecordingConfig:
    pre_event_s: float = 30.0
    pre_event_audio: bool = False
    video_bitrate_bps: int = 4_000_000
    keyframe_interval_s: float = 1.0
    audio_codec: str = "opus"
    audio_bitrate_bps: int = 64000


def _frozen_empty() -> Mapping[str, object]:
    return types.MappingProxyType({})


@dataclass(frozen=True, slots=True)
class SensorConfig:
    """One sensor instance. ``options`` is passed to the driver unchecked (read-only, nested
    tables as read-only mappings, arrays as tuples)."""

    driver: str = "sim"
    enabled: bool = True
    options: Mapping[str, object] = field(default_factory=_frozen_empty)


@dataclass(frozen=True, slots=True)
class ControlConfig:
    socket: str = "ctl.sock"


@dataclass(frozen=True, slots=True)
class ConsoleConfig:
    """The technician console on a serial line (``agent.console``); off while ``device`` is empty.

    ``technician_keys``: Ed25519 public keys that may log in, each a PEM file (relative paths
    are relative to the data dir) or the PEM text itself. ``technician_ca``: headquarters'
    technician-signing public key (file or PEM text; empty: none); a technician whose
    certificate it signed for this unit may log in too. ``login_required_for_read``: also ask
    for a login before showing status and diagnostics (changes always need one). After
    ``lockout_after`` failed logins in a row the line refuses logins for ``lockout_base_s``,
    doubling with each further failure up to ``lockout_max_s``; the count is kept in the data dir
    across restarts. A login ends on logout, after ``session_idle_s`` without a command from its
    holder, or when the line drops.
    """

    device: str = ""
    baud: int = 115200
    technician_keys: tuple[str, ...] = ()
    technician_ca: str = ""
    login_required_for_read: bool = False
    lockout_after: int = 3
    lockout_base_s: float = 30.0
    lockout_max_s: float = 900.0
    session_idle_s: float = 300.0


STORAGE_THRESHOLD_KEYS = ("warn_free_bytes", "critical_free_bytes", "full_free_bytes", "reserve_free_bytes")
DAY_S = 86400


@dataclass(frozen=True, slots=True)
class StorageConfig:
    """Free-space thresholds (0: derived from the recording bitrate, see ``agent.storage``) and
    how long a copy of footage headquarters has acknowledged stays on the unit (0: delete it as
    soon as it is acknowledged)."""

    warn_free_bytes: int = 0
    critical_free_bytes: int = 0
    full_free_bytes: int = 0
    reserve_free_bytes: int = 0
    keep_acknowledged_s: float = 7.0 * DAY_S

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
    """Uploads to headquarters (``agent.sync``), active when ``hq.url`` is set.

    ``interval_s``: how often an idle unit looks for new entries. ``heartbeat_s``: a signed
    status to headquarters this often while it is reachable. ``bandwidth_bps``: upload cap in
    bits per second (0: none). ``chunk_bytes``: bytes per request; after a cut at most one chunk
    is sent twice. Timeouts: ``connect_timeout_s`` for TCP, ``io_timeout_s`` for any read
    or write, ``ingest_timeout_s`` for the answer to the last chunk (headquarters verifies the
    whole file first). ``request_deadline_s``: the most one request may take in all (connect,
    TLS, body, answer); the last chunk's gets ``ingest_timeout_s`` more, a capped one the time
    the cap needs. ``backoff_max_s``: the longest wait between retries after errors.
    """

    interval_s: float = 5.0
    heartbeat_s: float = 60.0
    bandwidth_bps: int = 0
    chunk_bytes: int = 1_048_576
    connect_timeout_s: float = 10.0
    io_timeout_s: float = 30.0
    ingest_timeout_s: float = 120.0
    backoff_max_s: float = 300.0
    request_deadline_s: float = 120.0


@dataclass(frozen=True, slots=True)
class Config:
    """The whole unit configuration. Immutable; ``digest`` identifies it in evidence manifests."""

    device: DeviceConfig
    hq: HqConfig
    evidence: EvidenceConfig
    recording: RecordingConfig
    cameras: Mapping[str, SensorConfig]
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

    @property
    def digest(self) -> str:
        """SHA-256 hex of :func:`render_config`: equal for configs that mean the same thing,
        whatever the source file's comments, ordering or omitted defaults."""
        return hashlib.sha256(render_config(self).encode()).hexdigest()


def resolve_path(data_dir: str | os.PathLike[str], configured: str) -> Path:
    """A configured path made absolute: relative paths are relative to the data directory."""
    path = Path(configured)
    return path if path.is_absolute() else Path(data_dir) / path


class _Missing(enum.Enum):
    MISSING = 0


_REQUIRED = _Missing.MISSING


def _fmt(value: float) -> str:
    """Bounds as people write them: 120 not 120.0, 50000000 not 5e+07."""
    return str(value) if isinstance(value, int) else f"{value:g}"


class _Section:
    """Klipper-style reader over one TOML table: each getter pops its key with a type and bound
    check next to the default; :meth:`finish` then rejects whatever nobody asked for."""

    def __init__(self, path: str, table: Mapping[str, object], source: str) -> None:
        self._path = path
        self._rest = dict(table)
        self._source = source

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self._path}.{key}" if self._path else key, problem, self._source)

    def _pop(self, key: str, default: object) -> object:
        if key in self._rest:
            return self._rest.pop(key)
        if default is _REQUIRED:
            raise self.error(key, "required key is missing")
        return default

    def getstr(
        self,
        key: str,
        default: str | _Missing = _REQUIRED,
        *,
        choices: Sequence[str] | None = None,
        pattern: re.Pattern[str] | None = None,
        described: str = "",
        nonempty: bool = False,
    ) -> str:
        value = self._pop(key, default)
        if not isinstance(value, str):
            raise self.error(key, f"expected a string, got {value!r}")
        if choices is not None and value not in choices:
            raise self.error(key, f"{value!r} is not one of {', '.join(map(repr, choices))}")
        if pattern is not None and not pattern.fullmatch(value):
            raise self.error(key, f"{value!r} is not {described or pattern.pattern}")
        if nonempty and not value:
            raise self.error(key, "must not be empty")
        if "\0" in value:
            raise self.error(key, "must not contain NUL")
        return value

    def getint(
        self,
        key: str,
        default: int | _Missing = _REQUIRED,
        *,
        minval: int | None = None,
        maxval: int | None = None,
        choices: Sequence[int] | None = None,
    ) -> int:
        value = self._pop(key, default)
        if type(value) is not int:  # bool is an int subclass, and not a number here
            raise self.error(key, f"expected an integer, got {value!r}")
        if choices is not None and value not in choices:
            raise self.error(key, f"{value} is not one of {', '.join(map(str, choices))}")
        self._check_range(key, value, minval, maxval)
        return value

    def getfloat(
        self, key: str, default: float | _Missing = _REQUIRED, *, minval: float, maxval: float
    ) -> float:
        value = self._pop(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, f"expected a number, got {value!r}")
        if not math.isfinite(value):
            raise self.error(key, f"{value} is not a finite number")
        self._check_range(key, value, minval, maxval)
        return float(value)

    def _check_range(self, key: str, value: float, minval: float | None, maxval: float | None) -> None:
        if (minval is not None and value < minval) or (maxval is not None and value > maxval):
            lo = "" if minval is None else _fmt(minval)
            hi = "" if maxval is None else _fmt(maxval)
            raise self.error(key, f"{value} is out of range {lo}..{hi}")

    def getbool(self, key: str, default: bool | _Missing = _REQUIRED) -> bool:
        value = self._pop(key, default)
        if not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {value!r}")
        return value

    def getstrs(self, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        """An array of non-empty strings, as a tuple."""
        value = self._pop(key, default)
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise self.error(key, f"expected an array of strings, got {value!r}")
        for i, item in enumerate(value):
            if not item or "\0" in item:
                raise self.error(key, f"entry {i} is empty or contains NUL")
        return tuple(value)

    def gettable(self, key: str) -> dict[str, object]:
        """A sub-table as a plain dict ({} when absent), for keys read as data, not checked."""
        value = self._pop(key, {})
        if not isinstance(value, dict):
            raise self.error(key, f"expected a table, got {value!r}")
        return value

    def section(self, key: str) -> _Section:
        """A sub-table read with typed getters (empty when absent)."""
        path = f"{self._path}.{key}" if self._path else key
        return _Section(path, self.gettable(key), self._source)

    def has(self, key: str) -> bool:
        return key in self._rest

    def keys(self) -> list[str]:
        """The keys nobody has read yet, sorted."""
        return sorted(self._rest)

    def finish(self) -> None:
        if self._rest:
            key = sorted(self._rest)[0]
            section = not self._path and isinstance(self._rest[key], dict)
            raise self.error(key, "unknown section" if section else "unknown key")


def _freeze(value: object) -> object:
    if isinstance(value, dict):
        return _freeze_table(value)
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _freeze_table(table: Mapping[str, object]) -> Mapping[str, object]:
    return types.MappingProxyType({k: _freeze(v) for k, v in table.items()})


def _sensor(sec: _Section) -> SensorConfig:
    config = SensorConfig(
        driver=sec.getstr("driver", "sim", pattern=_DRIVER),
        enabled=sec.getbool("enabled", True),
        options=_freeze_table(sec.gettable("options")),
    )
    sec.finish()
    return config


def _cameras(root: _Section) -> Mapping[str, SensorConfig]:
    if not root.has("cameras"):
        return types.MappingProxyType({"chest": SensorConfig()})
    table = root.section("cameras")
    names = table.keys()
    for name in names:
        if not _INSTANCE.fullmatch(name):
            raise table.error(name, f"instance name does not match {_INSTANCE.pattern}")
    cameras = {name: _sensor(table.section(name)) for name in names}
    table.finish()
    return types.MappingProxyType(cameras)


def _url(sec: _Section, key: str) -> str:
    value = sec.getstr(key, "")
    if value:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise sec.error(key, f"{value!r} is not an http(s) URL")
    return value


def _build(root: _Section) -> Config:
    s = root.section("device")
    device = DeviceConfig(id=s.getstr("id", pattern=_DEVICE_ID, described="1-64 of A-Za-z0-9._- (not all dots)"))
    s.finish()

    s = root.section("hq")
    hq = HqConfig(public_key=s.getstr("public_key", "hq.pub", nonempty=True), url=_url(s, "url"),
                  ca=s.getstr("ca", ""))
    s.finish()

    s = root.section("evidence")
    evidence = EvidenceConfig(
        profile=s.getstr("profile", "default", choices=("default", "fips")),
        chunk_bytes=s.getint("chunk_bytes", 65536, minval=65536, maxval=16_777_216),
        flush_interval_s=s.getfloat("flush_interval_s", 1.0, minval=0.05, maxval=5.0),
        segment_s=s.getfloat("segment_s", 10.0, minval=2.0, maxval=600.0),
    )
    s.finish()

    s = root.section("recording")
    recording = RecordingConfig(
        pre_event_s=s.getfloat("pre_event_s", 30.0, minval=0.0, maxval=120.0),
        pre_event_audio=s.getbool("pre_event_audio", False),
        video_bitrate_bps=s.getint("video_bitrate_bps", 4_000_000, minval=100_000, maxval=50_000_000),
        keyframe_interval_s=s.getfloat("keyframe_interval_s", 1.0, minval=0.2, maxval=10.0),
        audio_codec=s.getstr("audio_codec", "opus", choices=("opus", "aac")),
        audio_bitrate_bps=s.getint("audio_bitrate_bps", 64000, minval=6000, maxval=512_000),
    )
    if recording.keyframe_interval_s > evidence.segment_s:
        # Segments are cut at keyframes; a longer keyframe interval would stretch every segment.
        raise s.error("keyframe_interval_s", f"{_fmt(recording.keyframe_interval_s)} exceeds "
                      f"evidence.segment_s ({_fmt(evidence.segment_s)})")
    s.finish()

    cameras = _cameras(root)
    sensors = {name: _sensor(root.section(name)) for name in SENSOR_SECTIONS}

    s = root.section("control")
    control = ControlConfig(socket=s.getstr("socket", "ctl.sock", nonempty=True))
    s.finish()

    s = root.section("console")
    console = ConsoleConfig(
        device=s.getstr("device", ""),
        baud=s.getint("baud", 115200, choices=STANDARD_BAUDS),
        technician_keys=s.getstrs("technician_keys"),
        technician_ca=s.getstr("technician_ca", ""),
        login_required_for_read=s.getbool("login_required_for_read", False),
        lockout_after=s.getint("lockout_after", 3, minval=1, maxval=100),
        lockout_base_s=s.getfloat("lockout_base_s", 30.0, minval=0.1, maxval=3600.0),
        lockout_max_s=s.getfloat("lockout_max_s", 900.0, minval=0.1, maxval=86400.0),
        session_idle_s=s.getfloat("session_idle_s", 300.0, minval=1.0, maxval=3600.0),
    )
    if console.lockout_max_s < console.lockout_base_s:
        raise s.error("lockout_max_s", f"{_fmt(console.lockout_max_s)} is below console.lockout_base_s "
                      f"({_fmt(console.lockout_base_s)})")
    s.finish()

    s = root.section("storage")
    storage = StorageConfig(
        **{key: s.getint(key, 0, minval=0, maxval=MAX_BYTES) for key in STORAGE_THRESHOLD_KEYS},
        keep_acknowledged_s=s.getfloat("keep_acknowledged_s", 7.0 * DAY_S, minval=0, maxval=365 * DAY_S),
    )
    wrong = storage.misordered()
    if wrong is not None:
        key, higher = wrong
        raise s.error(key, f"{getattr(storage, key)} exceeds storage.{higher} ({getattr(storage, higher)})")
    s.finish()

    s = root.section("sync")
    sync = SyncConfig(
        interval_s=s.getfloat("interval_s", 5.0, minval=0.1, maxval=3600.0),
        heartbeat_s=s.getfloat("heartbeat_s", 60.0, minval=5.0, maxval=86400.0),
        bandwidth_bps=s.getint("bandwidth_bps", 0, minval=0, maxval=10_000_000_000),
        chunk_bytes=s.getint("chunk_bytes", 1_048_576, minval=16_384, maxval=4_194_304),
        connect_timeout_s=s.getfloat("connect_timeout_s", 10.0, minval=0.5, maxval=300.0),
        io_timeout_s=s.getfloat("io_timeout_s", 30.0, minval=0.5, maxval=600.0),
        ingest_timeout_s=s.getfloat("ingest_timeout_s", 120.0, minval=1.0, maxval=3600.0),
        backoff_max_s=s.getfloat("backoff_max_s", 300.0, minval=1.0, maxval=86400.0),
        request_deadline_s=s.getfloat("request_deadline_s", 120.0, minval=0.5, maxval=3600.0),
    )
    s.finish()

    root.finish()
    return Config(device=device, hq=hq, evidence=evidence, recording=recording, cameras=cameras,
                  control=control, console=console, storage=storage, sync=sync, **sensors)


def parse_config(text: str, source: str = "<string>") -> Config:
    """Parse and validate TOML text; ``source`` names it in error messages."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("", f"invalid TOML: {e}", source) from None
    return _build(_Section("", doc, source))


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a config file; every failure is a :class:`ConfigError`."""
    source = os.fspath(path)
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError("", f"cannot read config: {e.strerror}", source) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError("", f"not UTF-8 at byte {e.start}", source) from None
    return parse_config(text, source)


def default_config(device_id: str, hq_public_key: str = "hq.pub") -> Config:
    """Every default, for a device with this id; validated like a file would be."""
    return parse_config(f"[device]\nid = {_value(device_id)}\n[hq]\npublic_key = {_value(hq_public_key)}\n",
                        "<defaults>")


# ---- TOML writer, for the subset a Config holds -------------------------------------------

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _string(value: str) -> str:
    out = []
    for ch in value:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _string(key)


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, datetime.date | datetime.time):  # datetime is a date subclass
        return value.isoformat()
    if isinstance(value, Mapping):
        items = ", ".join(f"{_key(str(k))} = {_value(v)}" for k, v in sorted(value.items()))
        return "{ " + items + " }" if items else "{}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _table(header: str, obj: object) -> list[str]:
    lines = [f"[{header}]"]
    for name in obj.__dataclass_fields__:  # type: ignore[attr-defined]
        lines.append(f"{name} = {_value(getattr(obj, name))}")
    return lines + [""]


def render_config(config: Config) -> str:
    """Canonical TOML: fixed section order, every key written, cameras and options sorted.

    ``parse_config(render_config(c)) == c`` for every valid ``c``.
    """
    lines: list[str] = []
    for name in ("device", "hq", "evidence", "recording"):
        lines += _table(name, getattr(config, name))
    if not config.cameras:
        lines += ["[cameras]", ""]
    for instance, camera in sorted(config.cameras.items()):
        lines += _table(f"cameras.{_key(instance)}", camera)
    for name in (*SENSOR_SECTIONS, "control", "console", "storage", "sync"):
        lines += _table(name, getattr(config, name))
    return "\n".join(lines)
