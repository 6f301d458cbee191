"""Building live view for a running unit from its config (the one place agent/live meets the rest)."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.config import resolve_path
from agent.config.model import Config, ConfigError
from agent.live.audio import LiveAudioFeed
from agent.live.controller import ClientWhip, LiveController
from agent.live.feed import LiveFeed
from hal.clock import Clock
from hal.keystore import KeyStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LiveSetup:
    camera: str
    feed: LiveFeed
    controller: LiveController
    audio: LiveAudioFeed | None = None  # [live] audio = "on": tapped from the recorder (Recorder.tap_audio)


def build_live(config: Config, data_dir: Path, keystore: KeyStore, clock: Clock, cameras: list[str],
               post_command: Callable[..., None], recording: Callable[[], bool],
               microphone: bool = False) -> LiveSetup | None:
    """Live view for this unit, or None when ``live.enabled`` is false. A camera name that is not
    a camera is a ConfigError; so is live view without headquarters or without aiortc installed,
    and live audio without a microphone recording Opus (``microphone``: one records)."""
    cfg = config.live
    if not cfg.enabled:
        return None
    if cfg.audio == "on" and not microphone:
        raise ConfigError("live.audio", 'is "on" but no microphone records: set [microphone] enabled = true, '
                                        'or live.audio = "off"')
    if cfg.audio == "on" and config.recording.audio_codec != "opus":
        raise ConfigError("live.audio", "sends the recording's own sound, which WebRTC carries only as Opus: "
                                        'set recording.audio_codec = "opus", or live.audio = "off"')
    camera = cfg.camera or (cameras[0] if cameras else "")
    if camera not in cameras:
        raise ConfigError("live.camera", f"{camera!r} is not an enabled camera ({', '.join(cameras) or 'none'})")
    if not config.hq.url or not config.hq.ca:
        raise ConfigError("live.enabled", "live view streams to headquarters: set hq.url and hq.ca")
    if importlib.util.find_spec("aiortc") is None:
        raise ConfigError("live.enabled", "live view needs aiortc: pip install 'bodycam[live]' "
                                          "(or set live.enabled = false)")
    # imported now, before the sensors run: importing aiortc later, on the first stream, costs
    # about a second of interpreter time while the camera threads record
    importlib.import_module("aiortc")
    from agent.sync.client import HqClient

    ca = resolve_path(data_dir, config.hq.ca)

    def client() -> Any:
        return HqClient(config.hq.url, ca, config.device.id, keystore, clock)

    feed = LiveFeed(cfg.fps, cfg.queue_frames)
    audio = LiveAudioFeed() if cfg.audio == "on" else None
    controller = LiveController(cfg, feed, ClientWhip(client), clock, post_command, recording, audio=audio)
    log.info("live view: on request from headquarters, camera %r at %dx%d %g fps%s", camera, cfg.width, cfg.height,
             cfg.fps, ", with sound (never while muted)" if audio else ", no sound")
    return LiveSetup(camera, feed, controller, audio)
