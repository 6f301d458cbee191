"""Record after the fact, end to end: a simulated unit keeps a background ring while not
recording (with its audio); a supervisor asks headquarters for a range (the real CLI); the unit takes the signed
request over its long poll, copies what its ring holds of the range into its chain and uploads it;
headquarters holds it as verifiable evidence flagged ``background`` and the unit's signed answer
says what was there and what had rotated out."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from agent.config import load_config, render_config
from agent.evidence.manifest import parse_manifest_record
from agent.evidence.segment import scan
from agent.store import RingEntry, Store
from hq.index import SqliteIndex
from hq.records import RecordingFilter
from tests.fakes import FakeClock
from tests.integration.agent_util import AgentProcess, run_cli
from tests.integration.hq_util import HqProcess, hq_keygen, provision_for_hq, wait_until

UNIT = "it-bg-1"
NS = 1_000_000_000


def ring(unit: Path) -> list[RingEntry]:
    with Store(unit / "index.sqlite", FakeClock()) as store:
        return store.ring_entries()


def background_requests(hq_dir: Path) -> list[dict[str, Any]]:
    res = run_cli("hq", "background", "list", "--data-dir", str(hq_dir), "--unit", UNIT, "--json")
    assert res.returncode == 0, res.stderr
    rows: list[dict[str, Any]] = json.loads(res.stdout)
    return rows


def request(hq_dir: Path, start_ns: int, end_ns: int, reason: str) -> None:
    res = run_cli("hq", "background", "request", UNIT, "--data-dir", str(hq_dir), "--from", str(start_ns),
                  "--to", str(end_ns), "--reason", reason)
    assert res.returncode == 0, res.stderr


def test_a_supervisor_gets_a_range_of_background_recording_and_what_rotated_out_is_said(tmp_path: Path) -> None:
    hq_dir, unit = tmp_path / "hq", tmp_path / "unit"
    hq_keygen(hq_dir)
    hq = HqProcess(hq_dir)
    try:
        path = provision_for_hq(unit, hq_dir, hq.url, UNIT)
        cfg = load_config(path)
        cfg = dataclasses.replace(cfg, background=dataclasses.replace(
            cfg.background, enabled=True, width=320, height=180, segment_s=2.0, audio="on"))
        path.write_text(render_config(cfg))
        agent = AgentProcess(unit, path)
        agent.wait_ready()
        wait_until(lambda: len(ring(unit)) >= 3, 60, "three background ring segments")
        entries = ring(unit)
        whole = (entries[0].utc_start_ns + NS // 2, entries[2].utc_end_ns - NS // 2)
        request(hq_dir, *whole, "complaint 2291: the whole range")
        # from an hour before the unit started: that part was never in the ring
        request(hq_dir, entries[0].utc_start_ns - 3600 * NS, entries[1].utc_end_ns, "complaint 2291: wider")

        def answered() -> bool:
            rows = background_requests(hq_dir)
            return len(rows) == 2 and all(r["state"] == "answered" for r in rows)

        wait_until(answered, 90, "the unit's signed answers")
        first, second = background_requests(hq_dir)
        assert first["outcome"] == "done", first
        assert first["result"]["detail"]["missing"] == [] and len(first["result"]["detail"]["entries"]) >= 2
        assert second["outcome"] == "partial", second
        missing = second["result"]["detail"]["missing"]
        assert missing[0][0] == entries[0].utc_start_ns - 3600 * NS and missing[0][1] == entries[0].utc_start_ns
        copied = set(first["result"]["detail"]["entries"]) | set(second["result"]["detail"]["entries"])

        def uploaded() -> bool:
            res = run_cli("hq", "evidence", "list", "--data-dir", str(hq_dir), "--json")
            listing = json.loads(res.stdout)
            held = {e["seq"] for e in (listing["evidence"] if isinstance(listing, dict) else listing)}
            return copied <= held

        wait_until(uploaded, 90, "the copied ranges at headquarters")
        res = run_cli("hq", "evidence", "list", "--data-dir", str(hq_dir), "--background", "--json")
        flagged = json.loads(res.stdout)
        assert {r["seq"] for r in flagged} == copied
        assert all("background" in r["flags"] for r in flagged)
        assert {r["background_request"] for r in flagged} == {first["request_id"], second["request_id"]}
        # the operations room's search finds each request's range as one recording
        with SqliteIndex(hq_dir / "index.sqlite") as index:
            found, total = index.search_recordings(RecordingFilter(background=True))
            others = index.search_recordings(RecordingFilter(background=False))[0]
        assert {r.recording_id: r.segments for r in found} == {
            f"background-{first['request_id']}": len(first["result"]["detail"]["entries"]),
            f"background-{second['request_id']}": len(second["result"]["detail"]["entries"])}
        assert total == 2 and not any(r.recording_id.startswith("background-") for r in others)
        status = agent.ctl("status")["data"]
        assert status["state"] == "ready"  # none of this needed a recording
        bg = status["background"]
        assert bg["audio"] and bg["audio_packets"] > 0 and bg["audio_muted"] == 0
        assert bg["ring"]["entries"] >= 3 and bg["ring"]["bytes"] > 0 and bg["last_error"] is None
        shown = run_cli("ctl", "--data-dir", str(unit), "status")
        assert "\nbackground  chest at 320x180, 10 fps, with audio; ring " in shown.stdout, shown.stdout
        agent.terminate()
        assert agent.wait(60) == 0, agent.log()
    finally:
        hq.stop()

    for seq in sorted(copied):
        with (hq_dir / "evidence" / UNIT / f"{seq:010d}.bcs").open("rb") as fh:
            found = scan(fh)
        assert found.manifest_record is not None
        manifest = parse_manifest_record(found.manifest_record).manifest
        assert "background" in manifest["flags"] and manifest["trigger"] == "background"
        audio = {t["name"]: t for t in manifest["tracks"]}.get("audio")
        assert audio is not None and audio["frames"] > 0, manifest["tracks"]  # audio = "on", never muted here
        assert manifest["background"]["request_id"] in {first["request_id"], second["request_id"]}
    # what a court gets: the export, background entries included, verifies and decodes
    out = tmp_path / "export"
    res = run_cli("hq", "export", "--data-dir", str(hq_dir), "--device", UNIT, "--out", str(out))
    assert res.returncode == 0, res.stderr
    ver = run_cli("verify", str(out), "--device-pub", str(out / "device.pub"), "--hq-key",
                  str(hq_dir / "keys" / "hq.key"), "--json")
    doc = json.loads(ver.stdout)
    assert doc["ok"], doc["problems"]
    assert {b["seq"] for b in doc["background"]} == copied
    # the unit's own log says who asked (pseudonymously) and what it did
    with Store(unit / "index.sqlite", FakeClock()) as store:
        audit = [a for a in store.audit_tail(500) if a.action in ("hq-request", "background_export")]
    assert [a.action for a in audit].count("hq-request") == 2
    assert all(a.outcome == "ok" for a in audit)
