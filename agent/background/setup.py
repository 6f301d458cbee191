"""Building a unit's background recording from its ``[background]`` section (None when it is off)."""

from __future__ import annotations

from pathlib import Path

from agent.background.recorder import BackgroundRecorder, BackgroundSettings
from agent.background.ring import BackgroundRing
from agent.config import Config, ConfigError
from agent.evidence.keys import HqPublicKey
from agent.media.packets import TrackSpec
from agent.store import Store
from hal.clock import Clock
from hal.keystore import KeyStore


def background_camera(config: Config) -> str:
    """The camera the background records: ``background.camera``, else the first enabled one."""
    enabled = [name for name, cam in config.cameras.items() if cam.enabled]
    wanted = config.background.camera
    if wanted:
        if wanted not in enabled:
            raise ConfigError("background.camera", f"no enabled camera {wanted!r} (cameras: {', '.join(enabled)})")
        return wanted
    if not enabled:
        raise ConfigError("background.enabled", "the background records a camera, and none is enabled")
    return enabled[0]


def build_background(config: Config, data_dir: Path, *, store: Store, signer: KeyStore, hq_public: HqPublicKey,
                     boot_id: str, firmware: str, clock: Clock,
                     audio_track: TrackSpec | None = None) -> BackgroundRecorder | None:
    """The background recording, or None when it is off. ``audio_track`` is the microphone's
    (None: no microphone), whose packets the caller taps into ``offer_audio`` when audio is on."""
    bg = config.background
    if not bg.enabled:
        return None
    if bg.width % 2 or bg.height % 2:
        raise ConfigError("background.width" if bg.width % 2 else "background.height", "must be even (H.264 4:2:0)")
    audio = bg.audio == "on"
    if audio and audio_track is None:
        raise ConfigError("background.audio", 'is "on" but no microphone records: set [microphone] enabled = true, '
                          'or background.audio = "off"')
    ring = BackgroundRing(data_dir, store=store, signer=signer, hq_public=hq_public, device_id=config.device.id,
                          boot_id=boot_id, firmware=firmware, config_sha256=config.digest, clock=clock,
                          chunk_bytes=config.evidence.chunk_bytes)
    settings = BackgroundSettings(background_camera(config), bg.width, bg.height, bg.fps, bg.bitrate_bps,
                                  bg.keep_h * 3600, bg.segment_s, audio)
    return BackgroundRecorder(settings, ring, clock, audio_track=audio_track if audio else None)
