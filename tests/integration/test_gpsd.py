"""The gpsd driver against a real gpsd on 127.0.0.1, fed NMEA through a pseudo-terminal.

Each test starts its own gpsd (Debian package ``gpsd``) on a free loopback port and kills it
at the end. Proves: reports before the first fix, time to first fix, the fix's values agree
with our own NMEA parser, accuracy from GST, UTC quality, loss of fix, and gpsd going away
and coming back (through the real sensor worker's reopen with backoff).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.workers import SensorWorker
from drivers import nmea
from drivers.gpsd_gnss import GpsdGnss
from drivers.sim_gnss import DEFAULT_TRACK
from drivers.system_clock import SystemClock
from hal.clock import TimeSource
from hal.common import SensorError
from hal.gnss import FixMode, GnssFix
from tests.gpsd_util import Gpsd, free_port
from tests.prereqs import require_tool


@pytest.fixture
def gpsd(tmp_path: Path) -> Iterator[Gpsd]:
    require_tool("gpsd")
    server = Gpsd(tmp_path)
    try:
        server.start()
        yield server
    finally:
        server.close()


def _track_epochs() -> list[list[str]]:
    lines = [ln for ln in DEFAULT_TRACK.read_text().splitlines() if ln.startswith("$")]
    epochs: list[list[str]] = []
    for line in lines:
        if line.startswith("$GPRMC"):
            epochs.append([])
        epochs[-1].append(line)
    return epochs


EPOCHS = _track_epochs()  # the shipped walk: epochs 0..5 without a fix, then a fix


def _reports_after(driver: GpsdGnss, server: Gpsd, epoch: list[str]) -> list[GnssFix]:
    """Write one epoch and collect what the driver reports for it."""
    server.write(epoch)
    out: list[GnssFix] = []
    while (fix := driver.read(0.6)) is not None:
        out.append(fix)
    return out


def _no_fix_epoch(hhmmss: str) -> list[str]:
    return [
        nmea.format_sentence(f"GPRMC,{hhmmss}.00,V,,,,,,,140524,,,N"),
        nmea.format_sentence(f"GPGGA,{hhmmss}.00,,,,,0,02,99.99,,,,,,"),
        nmea.format_sentence("GPGSA,A,1,,,,,,,,,,,,,99.99,99.99,99.99"),
    ]


def test_no_fix_then_first_fix_matches_our_nmea_parser(gpsd: Gpsd) -> None:
    driver = GpsdGnss(name="gnss", clock=SystemClock(), port=gpsd.port)
    with driver:
        before: list[GnssFix] = []
        for epoch in EPOCHS[:6]:
            before += _reports_after(driver, gpsd, epoch)
        assert before, "gpsd reports TPVs before the first fix"
        assert all(f.mode is FixMode.NO_FIX and f.lat_deg is None for f in before)
        assert driver.get_status()["time_to_first_fix_s"] is None
        assert driver.time_quality().synced is False

        fixes: list[GnssFix] = []
        for epoch in EPOCHS[6:12]:
            fixes += [f for f in _reports_after(driver, gpsd, epoch) if f.mode is not FixMode.NO_FIX]
        status = driver.get_status()
        assert status["gpsd_version"] and status["receivers"] == [gpsd.device]
        ttff = status["time_to_first_fix_s"]
        assert isinstance(ttff, float) and ttff > 0

    assert len(fixes) == 6, "one fix per epoch, no duplicates"
    for fix, epoch in zip(fixes, EPOCHS[6:12], strict=True):
        ours = nmea.fix_from_epoch([nmea.parse(s) for s in epoch], 0)
        assert fix.utc_ns == ours.utc_ns
        assert fix.lat_deg == pytest.approx(ours.lat_deg, abs=1e-7)
        assert fix.lon_deg == pytest.approx(ours.lon_deg, abs=1e-7)
        assert fix.h_acc_m == pytest.approx(ours.h_acc_m, abs=1e-3), "GST's 1-sigma, joined to its TPV"
        assert fix.speed_mps == pytest.approx(ours.speed_mps, abs=1e-3)
        if fix.mode is FixMode.FIX_3D:
            assert fix.alt_m == pytest.approx(ours.alt_m, abs=1e-3)
    assert [f.utc_ns for f in fixes] == sorted({f.utc_ns for f in fixes})
    q = driver.time_quality()
    assert q.source is TimeSource.GNSS and q.synced and q.uncertainty_ns == 5_000_000  # gpsd's ept for NMEA


def test_loss_of_fix_is_reported_and_counted(gpsd: Gpsd) -> None:
    driver = GpsdGnss(name="gnss", clock=SystemClock(), port=gpsd.port)
    with driver:
        for epoch in EPOCHS[6:9]:
            _reports_after(driver, gpsd, epoch)
        assert driver.get_status()["mode"] in ("FIX_2D", "FIX_3D")
        lost: list[GnssFix] = []
        for second in range(20, 23):
            lost += _reports_after(driver, gpsd, _no_fix_epoch(f"0930{second}"))
        assert lost and all(f.mode is FixMode.NO_FIX for f in lost)
        assert lost[-1].utc_ns is not None, "the receiver still tells the time"
        q = driver.time_quality()
        assert q.source is TimeSource.GNSS and not q.synced, "time without a fix is not trusted"
        assert driver.get_status()["fix_losses"] == 1
        fixes = _reports_after(driver, gpsd, EPOCHS[30])
        assert any(f.mode is not FixMode.NO_FIX for f in fixes)
        assert driver.time_quality().synced


def test_gpsd_not_running_is_a_sensor_error(tmp_path: Path) -> None:
    driver = GpsdGnss(name="gnss", clock=SystemClock(), port=free_port(), connect_timeout_s=0.5)
    with pytest.raises(SensorError, match="connecting to gpsd"):
        driver.open()
    assert "connecting to gpsd" in str(driver.get_status()["last_error"])


def test_gpsd_going_away_and_coming_back_recovers_through_the_worker(gpsd: Gpsd) -> None:
    clock = SystemClock()
    driver = GpsdGnss(name="gnss", clock=clock, port=gpsd.port)
    fixes: list[GnssFix] = []
    faults: list[str] = []
    recovered = threading.Event()
    worker = SensorWorker(
        "gnss", driver, fixes.append, clock,
        on_fault=lambda s, e: faults.append(e), on_recovered=lambda s: recovered.set(),
    )  # fmt: skip
    stop_feed = threading.Event()

    def feed() -> None:
        i = 6
        while not stop_feed.wait(0.2):
            with contextlib.suppress(OSError):
                gpsd.write(EPOCHS[i])
            i += 1

    feeder = threading.Thread(target=feed, daemon=True)
    worker.start()
    feeder.start()
    try:
        _wait_for(lambda: any(f.mode is not FixMode.NO_FIX for f in fixes), 15, "a fix before gpsd stops")
        gpsd.stop()
        _wait_for(lambda: bool(faults), 10, "the worker to see gpsd go away")
        assert "gpsd closed the connection" in faults[0] or "connecting to gpsd" in faults[0]
        count = len(fixes)
        gpsd.start()
        _wait_for(recovered.is_set, 20, "the worker to reconnect")
        _wait_for(lambda: any(f.mode is not FixMode.NO_FIX for f in fixes[count:]), 15, "fixes after reconnecting")
    finally:
        stop_feed.set()
        feeder.join(5)
        worker.stop()
    assert worker.status()["restarts"] == 1
    times = [f.utc_ns for f in fixes if f.utc_ns is not None and f.mode is not FixMode.NO_FIX]
    assert times == sorted(times), "UTC never goes backwards across the reconnection"


def _wait_for(condition: object, timeout_s: float, what: str) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
