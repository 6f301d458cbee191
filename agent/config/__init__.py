"""The unit's TOML configuration: typed, bounded, unknown keys rejected, with a canonical digest.

Each setting is declared once in :mod:`agent.config.model`; reading (:mod:`.reader`), writing
(:mod:`.writer`), the README table and the console's settable keys (:mod:`.table`) and comment-
keeping edits (:mod:`.edit`) are derived from those declarations.
"""

from agent.config.model import (
    DAY_S,
    MAX_BYTES,
    SENSOR_SECTIONS,
    STANDARD_BAUDS,
    STORAGE_THRESHOLD_KEYS,
    VIDEO_ENCODERS,
    BackgroundConfig,
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
)
from agent.config.reader import default_config, load_config, parse_config, resolve_path
from agent.config.writer import render_config

__all__ = [
    "DAY_S", "MAX_BYTES", "SENSOR_SECTIONS", "STANDARD_BAUDS", "STORAGE_THRESHOLD_KEYS", "VIDEO_ENCODERS",
    "BackgroundConfig", "CameraConfig", "Config",
    "ConfigError", "ConsoleConfig", "ControlConfig", "DeviceConfig", "EvidenceConfig", "HqConfig",
    "RecordingConfig", "SensorConfig", "StorageConfig", "SyncConfig", "default_config", "load_config",
    "parse_config", "render_config", "resolve_path",
]
