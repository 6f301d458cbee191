"""The worker processes of ``bodycam-hq serve --workers N``: forked, reaped, stopped; and the
private directory of the metrics' multiprocess mode."""

from __future__ import annotations

import os
import time

from hq.workers import MULTIPROC_ENV, MetricsDir, Workers


def test_workers_run_their_body_and_report_its_exit_code() -> None:
    workers = Workers(3, lambda i: i)
    workers.start()
    assert len(workers.pids) == 3 and os.getpid() not in workers.pids
    deadline = time.monotonic() + 30
    while workers.pids and time.monotonic() < deadline:
        workers.reap()
        time.sleep(0.02)
    assert workers.exits == {0: 0, 1: 1, 2: 2}


def test_stop_terminates_workers_and_says_whether_all_ended_cleanly() -> None:
    workers = Workers(2, lambda i: time.sleep(60) or 0)
    workers.start()
    started = time.monotonic()
    assert workers.stop(timeout_s=20) is False  # SIGTERM ended them: not a clean exit 0
    assert time.monotonic() - started < 20 and not workers.pids
    assert set(workers.exits) == {0, 1} and all(code != 0 for code in workers.exits.values())


def test_the_metrics_dir_is_private_and_removed() -> None:
    metrics_dir = MetricsDir()
    try:
        assert os.environ[MULTIPROC_ENV] == str(metrics_dir.path)
        assert metrics_dir.path.stat().st_mode & 0o077 == 0
    finally:
        metrics_dir.close()
    assert not metrics_dir.path.exists() and MULTIPROC_ENV not in os.environ
