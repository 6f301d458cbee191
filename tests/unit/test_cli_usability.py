"""A newcomer's first hour with ``bodycam``: human units, help on everything, flags after the
command, old spellings, and one-line errors that say what to do."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent import ctl_cmd, diag, humanize
from agent.cli import build_parser
from agent.console import render
from agent.diag_args import hoist_options
from agent.hints import sync_hint, with_sync_hint
from hq.cli import build_parser as build_hq_parser
from tests.evidence_util import ChainBuilder, MemorySigner


def test_figures_read_as_people_read_them() -> None:
    assert humanize.hours(0.01) == "36 s"
    assert humanize.hours(24.64) == "24 h 38 min"
    assert humanize.size(77351227392) == "77.4 GB"
    assert humanize.offset_ms(80552003158.1, "GNSS") == "932 days 7 h ahead of GNSS"
    assert humanize.offset_ms(-12.3, "GNSS") == "12 ms behind GNSS"
    assert humanize.duration(4.5) == "4.5 s" and humanize.duration(600) == "10 min"
    assert [humanize.plural(n, "file") for n in (0, 1, 2)] == ["0 files", "1 file", "2 files"]
    assert humanize.plural(1, "entry", "entries") == "1 entry"


def test_diag_storage_and_time_show_units_not_raw_numbers() -> None:
    storage = render.render("storage", {
        "level": "ok", "alarm": None, "free_bytes": 123_456_789, "hours_left": 0.01, "bytes_per_second": 870672.0,
        "keep_acknowledged_s": 604800, "last_pass_utc_ns": 1_700_000_000_000_000_000, "last_error": None,
        "deleted_files_total": 1, "deleted_bytes_total": 5000, "index": {"count": 1, "bytes": 2_000_000}})
    assert "123.5 MB" in storage and "36 s" in storage and "1 file," in storage and "1 entry," in storage
    assert "123456789" not in storage and "0.01" not in storage
    time_text = render.render("time", {"utc_ns": 1_700_000_000_000_000_000, "source": "rtc", "synced": False,
                                       "uncertainty_ms": None, "gnss_offset_ms": 80552003158.1, "monotonic_s": 42.0})
    assert "932 days 7 h ahead of GNSS" in time_text and "2023-11-14 22:13:20 UTC" in time_text
    assert "80552003158" not in time_text
    status = render.render("status", {"storage": {"level": "ok", "free_bytes": 10**10, "hours_left": 0.01},
                                      "time": {"source": "rtc", "synced": False, "gnss_offset_ms": 80552003158.1}})
    assert "36 s of recording left" in status and "932 days 7 h ahead of GNSS" in status


AGENT_STATUS = {
    "device_id": "unit-0042", "firmware": "0.1.0", "state": "recording", "stealth": False, "muted": True,
    "segment": {"bytes": 1458458, "marks": 1, "started_s_ago": 5.8},
    "storage": {"level": "ok", "alarm": None, "free_bytes": 77351227392, "hours_left": 0.01,
                "index": {"count": 1, "bytes": 2_600_000}},
    "power": {"battery_pct": 87.0, "charging": True},
    "time": {"source": "rtc", "synced": False, "gnss_offset_ms": 80552003158.1},
    "gnss": {"mode": 3, "h_acc_m": 2.16},
    "sensors": {"chest": {"state": "running"}, "thermal": {"state": "failed", "last_error": "SPI timeout"}},
    "dropped": {"chest": 0, "thermal": 3},
    "sync": {"state": "backoff", "connected": False, "backlog": {"entries": 1, "bytes": 1000}, "last_receipt": None,
             "alarm": None,
             "last_error": {"message": "TLS certificate refused: unable to get local issuer certificate"}},
}


def test_ctl_status_is_a_short_summary_for_a_person() -> None:
    text = ctl_cmd.summary(AGENT_STATUS)
    lines = text.splitlines()
    assert len(lines) <= 14, text
    assert "recording, segment 5.8 s old (1.5 MB, 1 mark); muted" in text
    assert "36 s of recording left; 1 entry held" in text
    assert "932 days 7 h ahead of GNSS" in text and "3D fix, accuracy 2.2 m" in text
    assert "thermal failed" in text and "sensor thermal: SPI timeout" in text and "thermal 3" in text
    assert "backlog 1 entry" in text and "likely cause: the unit's hq-ca.pem is not the CA" in text
    assert "--json" in lines[-1]


def test_ctl_status_shows_the_background_recording_when_it_is_on() -> None:
    assert "background" not in ctl_cmd.summary(AGENT_STATUS)
    hour_ns = 3600 * 10**9
    bg = {"camera": "chest", "width": 848, "height": 480, "fps": 10, "audio": True, "keep_h": 72.0,
          "last_error": None, "ring": {"entries": 3, "bytes": 45_000_000, "oldest_utc_ns": 1_700_000_000 * 10**9,
                                       "newest_utc_ns": 1_700_000_000 * 10**9 + 5 * hour_ns}}
    line = next(x for x in ctl_cmd.summary({**AGENT_STATUS, "background": bg}).splitlines()
                if x.startswith("background"))
    assert line.split(None, 1)[1] == ("chest at 848x480, 10 fps, with audio; ring 5 h 00 min of 3 days 0 h "
                                      "(3 files, 45.0 MB), from 2023-11-14 22:13:20 UTC")


def test_the_likely_cause_of_a_wrong_ca_or_hq_pub_is_named() -> None:
    assert "ca.pem" in str(sync_hint("TLS certificate refused: unable to get local issuer certificate"))
    receipt = "receipt signature does not verify with the pinned receipt key"
    assert "hq.pub is not this headquarters'" in with_sync_hint(receipt)
    assert with_sync_hint("timed out") == "timed out"


@pytest.mark.parametrize(("error", "expected"), [
    ({"code": "refused", "message": "already recording"},
     "start refused: the unit is already recording; `bodycam ctl stop` ends the recording"),
    ({"code": "failed", "message": "TimeoutError: "},
     "start failed: the recorder did not answer in time"),
])
def test_ctl_refusals_say_what_happened_and_what_to_do(error: dict[str, str], expected: str) -> None:
    text = ctl_cmd.refusal("start", error)
    assert text.startswith(expected) and "(refused)" not in text and "TimeoutError" not in text


def _walk(parser: argparse.ArgumentParser, path: str = "") -> list[tuple[str, argparse.ArgumentParser]]:
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                assert helps.get(name), f"{path} {name} has no help line"
                found += _walk(sub, f"{path} {name}".strip())
    return found


@pytest.mark.parametrize("tool", ["bodycam", "bodycam-hq"])
def test_every_command_and_option_has_help(tool: str) -> None:
    parser = build_parser() if tool == "bodycam" else build_hq_parser()
    for path, sub in _walk(parser):
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            assert action.help and action.help != argparse.SUPPRESS, \
                f"{tool} {path}: {action.option_strings or action.dest} has no help"


@pytest.mark.parametrize("tool", ["bodycam", "bodycam-hq"])
def test_both_tools_give_their_version_and_take_v(tool: str) -> None:
    done = subprocess.run([sys.executable, "-m", "agent.cli" if tool == "bodycam" else "hq.cli", "--version"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "0.1.0" in done.stdout and "evidence format 1" in done.stdout
    parser = build_parser() if tool == "bodycam" else build_hq_parser()
    argv = ["verify", "x"] if tool == "bodycam" else ["revoke", "--data-dir", "H", "--device-id", "u"]
    assert parser.parse_args(["-v", *argv]).verbose and parser.parse_args([*argv, "-v"]).verbose
    assert not parser.parse_args(argv).verbose


def test_ctl_and_diag_help_list_their_commands_and_verify_gives_its_exit_codes(
        capsys: pytest.CaptureFixture[str]) -> None:
    for argv, expected in ((["ctl", "--help"], ["status", "stealth", "on|off", "Exit codes"]),
                           (["diag", "--help"], ["selftest", "storage", "record start|stop|mark", "socat"]),
                           (["verify", "--help"], ["exit codes: 0", "1 problems found", "2 bad usage"])):
        with pytest.raises(SystemExit):
            build_parser().parse_args(argv)
        out = capsys.readouterr().out
        assert all(e in out for e in expected), (argv, out)


def test_diag_options_after_the_command_are_diags_own() -> None:
    args = hoist_options(build_parser().parse_args(["diag", "--port", "P", "status", "--json"]))
    assert args.json and args.command == ["status"] and args.port == "P"
    args = hoist_options(build_parser().parse_args(["diag", "log", "50", "--port=/dev/ttyX", "--timeout", "3"]))
    assert args.command == ["log", "50"] and args.port == "/dev/ttyX" and args.timeout == 3.0
    args = hoist_options(build_parser().parse_args(["diag", "--port", "P", "config", "set", "k", "--", "--json"]))
    assert args.command == ["config", "set", "k", "--json"] and not args.json


@pytest.mark.parametrize("argv", [
    ["provision", "--data-dir", "D", "--device-id", "bad id", "--hq-pub", "hq.pub"],
    ["run", "--sim", "--data-dir", "D", "--device-id", "../x"],
    ["verify", "D", "--device-id", "bad id"],
])
def test_a_bad_device_id_is_one_line_naming_the_value_and_the_rule(
        argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert repr(argv[argv.index("--device-id") + 1]) in err and "letters, digits" in err and "--help" in err


def test_a_public_key_given_as_the_technician_key_says_it_is_public(tmp_path: Path) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    pub = tmp_path / "alice.key.pub"
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    pub.chmod(0o644)
    with pytest.raises(diag.DiagError) as info:
        diag.load_technician_key(pub)
    assert "is a public key" in str(info.value) and str(tmp_path / "alice.key") in str(info.value)
    assert "chmod" not in str(info.value) and info.value.exit_code == diag.EXIT_USAGE


def test_verify_with_the_wrong_key_says_the_key_does_not_match(tmp_path: Path) -> None:
    b = ChainBuilder(tmp_path / "segments")
    b.incident(segments=2)
    wrong = ChainBuilder(tmp_path / "other", signer=MemorySigner()).write_device_pub(tmp_path / "wrong.pub")
    done = subprocess.run([sys.executable, "-m", "agent.cli", "verify", str(tmp_path / "segments"),
                           "--device-pub", str(wrong)], capture_output=True, text=True, check=False)
    assert done.returncode == 1, done
    assert "Device:      None" not in done.stdout and "no evidence entries found" not in done.stdout
    assert "RESULT: FAILED - the device key does not match this evidence" in done.stdout
    done = subprocess.run([sys.executable, "-m", "agent.cli", "verify", str(tmp_path / "segments"),
                           "--device-pub", str(wrong), "--json"], capture_output=True, text=True, check=False)
    assert json.loads(done.stdout)["device_key"]["matches"] is False
