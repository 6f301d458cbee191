"""SIGKILL while recording, restart: nothing sealed is lost, the tail is salvaged, the chain holds."""

from __future__ import annotations

from pathlib import Path

from tests.integration.killharness import run_harness


def test_kill_while_recording_loses_nothing_sealed(tmp_path: Path) -> None:
    result = run_harness(tmp_path / "unit", trials=3, seed=20261122)
    fig = result.figures()
    assert fig["segments_lost"] == 0
    assert fig["integrity_ok"]
    # every kill happened mid-recording, so each left a partial segment: salvaged, or (when the
    # kill came before its first chunk reached the disk) kept in quarantine; never deleted
    assert all(t.recovered_segments + t.quarantined >= 1 for t in result.trials), result.trials
    # footage up to about a second before each kill survives (1 s checkpoints, plus scheduling slack)
    assert all(t.lost_footage_s is not None and t.lost_footage_s < 2.5 for t in result.trials), result.trials
    # the whole chain verifies: every gap is explained by signed events, every chunk decrypts
    assert fig["final_verify_ok"], fig["final_verify_problems"]
    warnings = [w["reason"] for w in result.final_verify["warnings"]]
    assert sum("without a clean shutdown" in w for w in warnings) == 3
