"""Clock steps are detected against the monotonic clock and signed into the chain; order never depends on UTC."""

from __future__ import annotations

from pathlib import Path

from agent.evidence.media_check import check_media
from agent.evidence.verify import verify_path
from agent.timekeeping import ClockStepDetector, gnss_offset_ns
from tests.recorder_rig import Rig


def test_detector_ignores_running_and_slewing_and_reports_steps() -> None:
    d = ClockStepDetector(threshold_ns=500_000_000)
    assert d.observe(1_000, 5_000) is None  # first sample: nothing to compare with
    assert d.observe(2_000, 6_000) is None  # both clocks ran
    assert d.observe(3_000, 7_000 + 400_000_000) is None  # a slew below the threshold
    assert d.observe(4_000, 8_000 + 400_000_000 - 3_000_000_000) == -3_000_000_000  # stepped back 3 s
    assert d.observe(5_000, 9_000 + 400_000_000 - 3_000_000_000) is None


def test_gnss_offset_is_measured_at_the_fix_instant() -> None:
    # the fix was taken 0.2 s before "now"; the unit's UTC at that instant is 1.5 s ahead of GNSS
    assert gnss_offset_ns(fix_utc_ns=10_000, fix_mono_ns=800, clock_utc_ns=11_700, clock_mono_ns=1_000) == 1_500


def test_backward_step_while_recording_is_signed_and_the_chain_still_verifies(tmp_path: Path) -> None:
    rig = Rig(tmp_path, pre_event_s=0, segment_s=2)
    rig.rec.step_command("start")
    rig.tick(15)
    rig.clock.set_utc_ns(rig.clock.utc_ns() - 3600 * 10**9)  # an hour back, as a bad NTP server might
    rig.tick(30)
    rig.rec.step_command("stop")
    ms = rig.manifests()
    step = [m for m in ms if m.get("event") == "clock-step"]
    assert len(step) == 1 and step[0]["detail"]["step_ns"] == -3600 * 10**9
    flagged = [m for m in ms if m["type"] == "segment" and "clock-unsynced" in m["flags"]]
    assert len(flagged) >= 1
    # UTC went backwards, but seq and monotonic time keep the chain in order
    report = verify_path(tmp_path, rig.signer.public_key(), hq_key=rig.hq, decode=check_media)
    assert report.ok, [p.reason for p in report.problems]
