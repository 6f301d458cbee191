"""``bodycam provision --hq-url --hq-ca``: the CA copied, hq.url and hq.ca set; bad input refused
before anything is created. And the worker's settings from the ``[sync]`` section."""

from __future__ import annotations

import argparse
import dataclasses
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from agent.config import SyncConfig, load_config
from agent.evidence.keys import FileKeyStore, KeyFileError, generate_hq_key, write_hq_pub
from agent.provision import CONFIG_NAME, HQ_CA_NAME, ProvisionError, add_parser, provision, run
from agent.store import Store
from agent.sync.heartbeat import unit_status
from agent.sync.setup import SyncSetupError, build_sync_worker
from agent.sync.worker import SyncSettings
from tests.fakes import FakeClock
from tests.unit.test_sync_support import make_pki


@pytest.fixture
def hq_pub(tmp_path: Path) -> Path:
    path = tmp_path / "hq.pub"
    write_hq_pub(path, x25519.X25519PrivateKey.generate().public_key(),
                 ed25519.Ed25519PrivateKey.generate().public_key())
    return path


def test_provision_with_sync_copies_the_ca_and_sets_the_config(tmp_path: Path, hq_pub: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    data = tmp_path / "unit"
    provision(data, "unit-9", hq_pub, hq_url="https://hq.example:8443", hq_ca=pki.ca_pem)
    assert (data / HQ_CA_NAME).read_bytes() == pki.ca_pem.read_bytes()
    assert stat.S_IMODE((data / HQ_CA_NAME).stat().st_mode) == 0o644
    cfg = load_config(data / CONFIG_NAME)
    assert cfg.hq.url == "https://hq.example:8443" and cfg.hq.ca == HQ_CA_NAME
    assert cfg.sync == SyncConfig()


def test_provision_without_sync_leaves_it_off(tmp_path: Path, hq_pub: Path) -> None:
    provision(tmp_path / "unit", "unit-9", hq_pub)
    cfg = load_config(tmp_path / "unit" / CONFIG_NAME)
    assert cfg.hq.url == "" and cfg.hq.ca == ""
    assert not (tmp_path / "unit" / HQ_CA_NAME).exists()


@pytest.mark.parametrize(("url", "ca", "fragment"), [
    ("https://hq.example", None, "go together"),
    ("", "ca", "go together"),
    ("http://hq.example", "ca", "not https"),
    ("https://hq.example", "missing", "reading --hq-ca"),
    ("https://hq.example", "garbage", "no PEM certificate"),
])
def test_bad_sync_options_are_refused_before_anything_is_created(
        tmp_path: Path, hq_pub: Path, url: str, ca: str | None, fragment: str) -> None:
    pki = make_pki(tmp_path / "pki")
    (tmp_path / "garbage.pem").write_text("not a certificate")
    ca_path = {None: None, "ca": pki.ca_pem, "missing": tmp_path / "nope.pem", "garbage": tmp_path / "garbage.pem"}[ca]
    with pytest.raises(ProvisionError, match=fragment):
        provision(tmp_path / "unit", "unit-9", hq_pub, hq_url=url, hq_ca=ca_path)
    assert not (tmp_path / "unit").exists()


def test_an_hq_pub_without_a_receipt_key_cannot_sync(tmp_path: Path) -> None:
    old = tmp_path / "old.pub"
    generate_hq_key(tmp_path / "hq.key", old)  # one key: from before receipts
    pki = make_pki(tmp_path / "pki")
    with pytest.raises(KeyFileError, match="receipt key"):
        provision(tmp_path / "unit", "unit-9", old, hq_url="https://hq.example", hq_ca=pki.ca_pem)
    assert not (tmp_path / "unit").exists()


def test_command_line_options(tmp_path: Path, hq_pub: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pki = make_pki(tmp_path / "pki")
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["provision", "--data-dir", str(tmp_path / "unit"), "--device-id", "unit-9",
                              "--hq-pub", str(hq_pub), "--hq-url", "https://127.0.0.1:8443", "--hq-ca",
                              str(pki.ca_pem)])
    assert run(args) == 0
    assert load_config(tmp_path / "unit" / CONFIG_NAME).hq.url == "https://127.0.0.1:8443"
    args = parser.parse_args(["provision", "--data-dir", str(tmp_path / "u2"), "--device-id", "unit-9",
                              "--hq-pub", str(hq_pub), "--hq-url", "https://127.0.0.1:8443"])
    assert run(args) == 1
    assert "go together" in capsys.readouterr().err


def test_settings_from_the_sync_section() -> None:
    s = SyncSettings.from_config(SyncConfig(interval_s=2.0, heartbeat_s=30.0, bandwidth_bps=1000, chunk_bytes=32768,
                                            connect_timeout_s=3.0, io_timeout_s=4.0, ingest_timeout_s=50.0,
                                            backoff_max_s=600.0, request_deadline_s=70.0))
    assert (s.interval_s, s.heartbeat_s, s.bandwidth_bps, s.chunk_bytes) == (2.0, 30.0, 1000, 32768)
    assert (s.timeouts.connect_s, s.timeouts.io_s, s.timeouts.ingest_s, s.timeouts.request_s) == (3.0, 4.0, 50.0, 70.0)
    assert (s.backoff.initial_s, s.backoff.max_s) == (1.0, 600.0)
    assert SyncSettings.from_config(SyncConfig(backoff_max_s=1.0)).backoff.initial_s == 1.0


# ---- building the worker from the config ----------------------------------------------------


def test_build_sync_worker_from_a_provisioned_unit(tmp_path: Path, hq_pub: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    data = tmp_path / "unit"
    provision(data, "unit-9", hq_pub, hq_url="https://127.0.0.1:8443", hq_ca=pki.ca_pem)
    cfg = load_config(data / CONFIG_NAME)
    clock = FakeClock()
    with Store(data / "index.sqlite", clock) as store:
        worker = build_sync_worker(cfg, data, store, FileKeyStore(data / "device.key"), clock, dict)
        assert worker is not None
        st = worker.get_status()
        assert st["hq_url"] == "https://127.0.0.1:8443" and st["state"] == "starting"
        assert worker._settings == SyncSettings.from_config(cfg.sync)
        assert worker._ca_path == data / HQ_CA_NAME
        off = dataclasses.replace(cfg, hq=dataclasses.replace(cfg.hq, url=""))
        assert build_sync_worker(off, data, store, FileKeyStore(data / "device.key"), clock, dict) is None
        no_ca = dataclasses.replace(cfg, hq=dataclasses.replace(cfg.hq, ca=""))
        with pytest.raises(SyncSetupError, match="hq.ca"):
            build_sync_worker(no_ca, data, store, FileKeyStore(data / "device.key"), clock, dict)
        generate_hq_key(tmp_path / "old.key", data / "hq.pub", overwrite=True)  # one key: no receipt key
        with pytest.raises(SyncSetupError, match="receipt"):
            build_sync_worker(cfg, data, store, FileKeyStore(data / "device.key"), clock, dict)


def test_unit_status_for_the_heartbeat() -> None:
    recorder = {"state": "RECORDING", "recording_id": "r1", "stealth": False, "muted": True, "storage_level": "ok",
                "gnss": {"mode": 3, "lat_deg": 51.5, "lon_deg": -0.12, "h_acc_m": 4.0}, "frames": {"chest": 10},
                "time": {"source": "ntp", "synced": True}}
    storage: dict[str, object] = {"level": "ok", "alarm": None, "free_bytes": 123, "hours_left": 4.5, "thresholds": {}}
    st = unit_status(recorder, storage, {"battery_pct": 80.5, "charging": True})
    assert st == {
        "battery": {"battery_pct": 80.5, "charging": True},
        "storage": {"level": "ok", "alarm": None, "free_bytes": 123, "hours_left": 4.5},
        "recording": {"state": "RECORDING", "recording_id": "r1", "stealth": False, "muted": True,
                      "storage_level": "ok"},
        "gnss": {"mode": 3, "lat_deg": 51.5, "lon_deg": -0.12, "h_acc_m": 4.0},
        "time": {"source": "ntp", "synced": True},
    }
    assert unit_status({}, {}, None)["battery"] is None
