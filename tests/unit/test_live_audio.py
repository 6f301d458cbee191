"""Live sound on the unit: only when configured, the recording's own packets, never while muted."""

from __future__ import annotations

import dataclasses

import pytest

from agent.config import default_config
from agent.config.model import ConfigError, LiveConfig
from agent.live.audio import LiveAudioFeed
from agent.media.packets import EncodedPacket


def packet(i: int) -> EncodedPacket:
    return EncodedPacket("mic", i * 20_000_000, i * 20_000_000, 20_000_000, True, bytes([i]), 960)


def test_muted_packets_never_reach_the_stream_and_a_full_queue_drops_its_oldest() -> None:
    feed = LiveAudioFeed(depth=3)
    feed.offer(packet(0), muted=False)  # no stream open: not kept
    feed.open()
    for i in range(1, 6):
        feed.offer(packet(i), muted=i == 2)
    assert [feed.take(0).pts_ns // 20_000_000 for _ in range(3)] == [3, 4, 5]  # type: ignore[union-attr]
    assert feed.take(0) is None
    assert (feed.offered, feed.muted, feed.dropped, feed.taken) == (4, 1, 1, 3)
    feed.offer(packet(6), muted=False)
    feed.close()
    assert feed.take(1.0) is None  # closing forgets what waits


def test_live_sound_needs_a_microphone_recording_opus() -> None:
    from agent.live.wiring import build_live

    live = dataclasses.replace(LiveConfig(), enabled=True, audio="on")
    cfg = dataclasses.replace(default_config("unit-1"), live=live)
    with pytest.raises(ConfigError, match="live.audio.*microphone"):
        build_live(cfg, None, None, None, ["cam"], lambda *a, **k: None, lambda: False,  # type: ignore[arg-type]
                   microphone=False)
    aac = dataclasses.replace(cfg, recording=dataclasses.replace(cfg.recording, audio_codec="aac"))
    with pytest.raises(ConfigError, match="Opus"):
        build_live(aac, None, None, None, ["cam"], lambda *a, **k: None, lambda: False,  # type: ignore[arg-type]
                   microphone=True)
