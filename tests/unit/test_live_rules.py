"""Live view's pure parts: when a stream stops, the bitrate it sends, the queue that never blocks the camera."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import numpy as np

from agent.live.bitrate import Bounds, Report, news, next_bitrate
from agent.live.feed import LiveFeed
from agent.live.rules import Rules, StopReason, should_auto_start, should_stop, started, viewers_changed
from agent.recorder import mode as machine
from hal.camera import VideoFrame
from hal.indicators import Indicator, Pattern

S = 1_000_000_000
RULES = Rules(auto_while_recording=False, stop_with_recording=True, max_duration_ns=60 * S, idle_stop_ns=10 * S)


def test_a_requested_stream_without_viewers_stops_after_the_idle_time() -> None:
    s = started(0, "op-1", viewers=0)
    assert should_stop(RULES, s, recording=True, was_recording=True, now_ns=9 * S) is None
    assert should_stop(RULES, s, recording=True, was_recording=True, now_ns=10 * S) is StopReason.NO_VIEWERS


def test_the_last_viewer_leaving_starts_the_idle_clock_and_a_new_viewer_stops_it() -> None:
    s = viewers_changed(started(0, "op-1", viewers=2), 0, 30 * S)
    assert should_stop(RULES, s, True, True, 39 * S) is None
    assert should_stop(RULES, s, True, True, 40 * S) is StopReason.NO_VIEWERS
    back = viewers_changed(s, 1, 35 * S)
    assert should_stop(RULES, back, True, True, 50 * S) is None


def test_the_time_limit_and_the_end_of_the_recording_stop_a_watched_stream() -> None:
    s = started(0, "op-1", viewers=3)
    assert should_stop(RULES, s, True, True, 59 * S) is None
    assert should_stop(RULES, s, True, True, 60 * S) is StopReason.TIME_LIMIT
    assert should_stop(RULES, s, False, True, 5 * S) is StopReason.RECORDING_STOPPED
    # a stream asked for while not recording is not ended by the recording it never had
    assert should_stop(RULES, s, False, False, 5 * S) is None
    keep = Rules(stop_with_recording=False, max_duration_ns=0, idle_stop_ns=10 * S)
    assert should_stop(keep, s, False, True, 10_000 * S) is None


def test_an_automatic_stream_waits_for_viewers_while_recording() -> None:
    rules = Rules(auto_while_recording=True, idle_stop_ns=10 * S, max_duration_ns=0)
    assert should_auto_start(rules, recording=True, spent=False)
    assert not should_auto_start(rules, recording=True, spent=True)
    assert not should_auto_start(rules, recording=False, spent=False)
    s = started(0, "auto", viewers=0, auto=True)
    assert should_stop(rules, s, True, True, 100 * S) is None
    assert should_stop(rules, s, False, True, 100 * S) is StopReason.RECORDING_STOPPED


def test_bitrate_falls_with_loss_and_round_trip_and_climbs_on_a_clean_link() -> None:
    b = Bounds(300_000, 800_000)
    assert next_bitrate(500_000, b, 0.30, 0.05, None) == 425_000
    assert next_bitrate(500_000, b, 0.05, 0.6, None) == 425_000
    assert next_bitrate(500_000, b, 0.0, 0.05, None) == 540_000
    assert next_bitrate(500_000, b, 0.05, 0.05, None) == 500_000  # between: hold
    assert next_bitrate(790_000, b, 0.0, 0.05, None) == 800_000
    assert next_bitrate(310_000, b, 0.9, 0.05, None) == 300_000
    assert next_bitrate(700_000, b, 0.0, 0.05, 400_000) == 400_000  # the media server's estimate caps it
    assert next_bitrate(500_000, b, None, None, None) == 500_000


def test_only_a_new_receiver_report_moves_the_bitrate_a_silent_link_holds_it() -> None:
    b = Bounds(300_000, 800_000)
    t0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    clean = Report(t0, 0.0, 0.01)
    assert news(None, None) == (None, None)  # no report yet
    assert news(clean, None) == (0.0, 0.01)
    # a loss burst takes the reports too: the same clean report again is no news, the rate holds
    assert news(clean, clean) == (None, None)
    assert next_bitrate(500_000, b, *news(clean, clean), None) == 500_000
    lossy = Report(t0 + timedelta(seconds=3), 0.8, 0.01)
    assert news(lossy, clean) == (0.8, 0.01)  # the report after the burst counts once
    assert next_bitrate(500_000, b, *news(lossy, lossy), None) == 500_000
    # an equal report that arrived later is news (the link is alive and still clean)
    assert news(Report(t0 + timedelta(seconds=1), 0.0, 0.01), clean) == (0.0, 0.01)


def _frame(i: int, mono_ns: int) -> VideoFrame:
    return VideoFrame("c", i, mono_ns, 0, 16, 16, "yuv420p", np.zeros((24, 16), np.uint8))


def test_the_feed_keeps_nothing_while_closed_and_halves_30_fps_to_15() -> None:
    feed = LiveFeed(fps=15.0, depth=100)
    feed.offer(_frame(0, 0))
    assert feed.get_status()["offered"] == 0
    feed.open()
    for i in range(30):
        feed.offer(_frame(i, i * S // 30))
    kept = []
    while (f := feed.take(0)) is not None:
        kept.append(f.index)
    assert kept == list(range(0, 30, 2))


def test_a_full_feed_drops_its_oldest_frame_and_never_blocks_the_camera() -> None:
    feed = LiveFeed(fps=30.0, depth=2)
    feed.open()
    done = threading.Event()

    def camera() -> None:
        for i in range(100):
            feed.offer(_frame(i, i * S // 30))
        done.set()

    t = threading.Thread(target=camera)
    t.start()
    assert done.wait(5), "offer blocked with nobody taking"
    t.join()
    assert feed.dropped == 98 and [feed.take(0).index, feed.take(0).index] == [98, 99]  # type: ignore[union-attr]
    feed.close()
    assert feed.take(1.0) is None


def test_watched_blinks_the_recording_light_pulses_the_haptic_and_stealth_darkens_both() -> None:
    m = machine.Mode(state=machine.State.READY, recording_id="r")
    out = machine.live_changed(m, True, {"by": "op-1", "viewers": 1}, "both")
    sign = out.after[0]
    assert isinstance(sign, machine.Sign) and sign.kind == "live-start" and sign.detail["by"] == "op-1"
    patterns = dict(out.after[1].patterns)  # type: ignore[union-attr]
    assert patterns[Indicator.RECORDING_LED] is Pattern.BLINK and patterns[Indicator.HAPTIC] is Pattern.PULSE
    light_only = dict(machine.live_changed(m, True, {}, "light").after[1].patterns)  # type: ignore[union-attr]
    assert Indicator.HAPTIC not in light_only and light_only[Indicator.RECORDING_LED] is Pattern.BLINK
    none = dict(machine.live_changed(m, True, {}, "none").after[1].patterns)  # type: ignore[union-attr]
    assert none[Indicator.RECORDING_LED] is Pattern.ON
    dark = machine.live_changed(machine.Mode(state=machine.State.READY, recording_id="r", stealth=True), True,
                                {"by": "op-1"}, "both")
    assert isinstance(dark.after[0], machine.Sign) and dark.after[0].kind == "live-start"  # still in the chain
    assert set(dict(dark.after[1].patterns).values()) == {Pattern.OFF}  # type: ignore[union-attr]
    stop = machine.live_changed(out.mode, False, {"by": "op-1", "viewers": 0, "reason": "no-viewers"}, "both")
    assert stop.after[0].kind == "live-stop"  # type: ignore[union-attr]
    assert dict(stop.after[1].patterns)[Indicator.RECORDING_LED] is Pattern.ON  # type: ignore[union-attr]
