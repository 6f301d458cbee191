"""What `make run` prints while the unit runs, and when it stops the unit (scripts/demo.py's pure parts)."""

from __future__ import annotations

from typing import Any

from scripts.demo import INCIDENT, Timeline, estimate_s, finished, progress_line, stays

TIMELINE = Timeline.parse(INCIDENT)  # record at 35 s, marks at 42 and 50 s, stop at 58 s


def status(state: str, sealed: int = 0, open_s: float | None = None) -> dict[str, Any]:
    return {"state": state, "segments_sealed": sealed, "pre_event": {"configured_s": 30.0},
            "segment": None if open_s is None else {"started_s_ago": open_s}}


def test_the_estimate_is_the_last_press_plus_the_measured_overhead() -> None:
    assert TIMELINE.last_s == 58.0
    assert estimate_s(TIMELINE) == 75
    assert estimate_s(Timeline.parse("2:record,4:record")) == 20


def test_the_silent_pre_event_wait_says_what_fills_and_when_recording_starts() -> None:
    assert progress_line(5.2, None, None, TIMELINE) == "  [   5 s] the unit is starting: opening its simulated sensors"
    line = progress_line(20.0, status("ready"), 0, TIMELINE)
    assert "pre-event buffer 20 of 30 s" in line and line.endswith("next: record button at 35 s")
    assert "pre-event buffer 30 of 30 s" in progress_line(34.0, status("ready"), 0, TIMELINE)


def test_recording_and_after_say_what_is_sealed_and_what_waits_to_upload() -> None:
    line = progress_line(45.0, status("recording", sealed=3, open_s=4.0), 2, TIMELINE)
    assert line == ("  [  45 s] recording: 3 segments sealed, the current one open for 4 s; "
                    "2 entries waiting to upload; next: mark button at 50 s")
    after = progress_line(60.0, status("ready", sealed=5), 1, TIMELINE)
    assert after.endswith("stopped recording; 1 entry waiting to upload")


def test_the_unit_is_stopped_once_the_script_is_played_and_everything_is_acknowledged() -> None:
    assert not finished(40.0, status("ready"), 0, TIMELINE)  # the script is not played yet
    assert not finished(60.0, status("recording"), 0, TIMELINE)
    assert not finished(60.0, status("ready", sealed=5), 2, TIMELINE)
    assert not finished(60.0, status("ready", sealed=5), None, TIMELINE)  # unknown is not done
    assert not finished(60.0, None, 0, TIMELINE)
    assert finished(60.0, status("ready", sealed=5), 0, TIMELINE)


def test_the_demo_stays_up_only_for_a_terminal_or_when_asked() -> None:
    assert stays("auto", stdin_is_tty=True)
    assert not stays("auto", stdin_is_tty=False)  # tests, CI, a pipe: stop as before
    assert stays("yes", stdin_is_tty=False)
    assert not stays("no", stdin_is_tty=True)
