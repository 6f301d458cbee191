"""The sync worker's alarm hooks: every alarm reaches ``on_alarm``; a standing one that is over
reaches ``on_alarm_cleared``, so the unit can sign both and set its indicator."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.backoff import Backoff
from agent.sync.client import Timeouts
from agent.sync.phases import Phase
from agent.sync.worker import SyncSettings, SyncWorker
from tests.unit.test_sync_support import Unit, make_unit


@pytest.fixture
def unit(tmp_path: Path) -> Iterator[Unit]:
    u = make_unit(tmp_path)
    yield u
    u.hq.close()
    u.store.close()


def worker(unit: Unit, cleared: list[str], ca: Path | None = None) -> SyncWorker:
    settings = SyncSettings(chunk_bytes=64 * 1024, backoff=Backoff(0.05, 1.0), auth_retry_s=900.0,
                            timeouts=Timeouts(connect_s=2.0, io_s=2.0, ingest_s=2.0))
    return SyncWorker(unit.store, unit.data_dir, unit.chain.signer, unit.chain.device_id, unit.hq.url,
                      ca or unit.pki.ca_pem, unit.hq.receipt_key.public_key(), unit.clock, settings, lambda: {},
                      on_alarm=lambda kind, message: unit.alarms.append((kind, message)),
                      on_alarm_cleared=cleared.append, rng=random.Random(1))


def test_a_refusal_is_raised_once_and_cleared_when_headquarters_accepts_the_unit(unit: Unit) -> None:
    unit.add_segment()
    cleared: list[str] = []
    w = worker(unit, cleared)
    unit.hq.faults.auth = 403
    w.run_once()
    unit.clock.advance(900.0)
    w.run_once()
    assert [k for k, _ in unit.alarms] == ["auth"] and cleared == [] and w.phase is Phase.REFUSED
    unit.hq.faults.auth = 0
    unit.clock.advance(900.0)
    w.run_once()
    assert cleared == ["auth"] and w.phase is Phase.IDLE and w.get_status()["alarm"] is None


def test_a_configuration_alarm_is_cleared_by_the_first_good_pass(unit: Unit, tmp_path: Path) -> None:
    cleared: list[str] = []
    w = worker(unit, cleared, ca=tmp_path / "missing-ca.pem")
    w.run_once()
    assert [k for k, _ in unit.alarms] == ["config"] and w.phase is Phase.BACKOFF
    w._ca_path = unit.pki.ca_pem  # provisioned later, without a restart
    unit.clock.advance(2.0)
    w.run_once()
    assert cleared == ["config"] and w.phase is Phase.IDLE


def test_stop_is_the_last_phase(unit: Unit) -> None:
    w = worker(unit, [])
    w.run_once()
    w.stop()
    w.stop()
    assert w.phase is Phase.STOPPED and w.get_status()["state"] == "stopped"
