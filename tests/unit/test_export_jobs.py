"""The operations room's export queue: bounded concurrency and queue, failures kept with their
reason, and jobs cut short by a stop shown as interrupted after a restart."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from hq.export_jobs import ExportJob, ExportJobError, ExportJobs, ExportOutcome
from tests.fakes import FakeClock


def _wait(jobs: ExportJobs, job_id: str, state: str) -> ExportJob:
    deadline = time.monotonic() + 10
    while (job := jobs.get(job_id)) is None or job.state != state:
        assert time.monotonic() < deadline, job
        time.sleep(0.01)
    return job


def test_at_most_n_run_at_once_and_a_full_queue_refuses(tmp_path: Path) -> None:
    clock = FakeClock()
    release = threading.Event()
    lock = threading.Lock()
    running = {"now": 0, "most": 0}
    finished: list[str] = []

    def run(job: ExportJob) -> ExportOutcome:
        with lock:
            running["now"] += 1
            running["most"] = max(running["most"], running["now"])
        release.wait(10)
        with lock:
            running["now"] -= 1
        if job.case_id == "bad":
            raise RuntimeError("no case 'bad'")
        return ExportOutcome(f"{job.case_id}-x", f"{job.case_id}-x.zip", 1, 1)

    jobs = ExportJobs(tmp_path / "jobs", run, clock.utc_ns, workers=2, queue_max=2,
                      on_finish=lambda j: finished.append(j.state))
    first, second = jobs.submit("c1", "sam"), jobs.submit("bad", "sam")
    _wait(jobs, first.job_id, "running")
    _wait(jobs, second.job_id, "running")
    waiting = [jobs.submit("c3", "sue"), jobs.submit("c4", "sam")]
    with pytest.raises(ExportJobError, match="2 exports are already waiting"):
        jobs.submit("c5", "sam")
    assert [j.state for j in jobs.jobs("sue")] == ["queued"]
    release.set()
    done = _wait(jobs, first.job_id, "done")
    assert done.archive == "c1-x.zip" and done.viewing_copies == 1
    failed = _wait(jobs, second.job_id, "failed")
    assert failed.error == "no case 'bad'"
    for j in waiting:
        _wait(jobs, j.job_id, "done")
    assert running["most"] == 2
    deadline = time.monotonic() + 10
    while len(finished) < 4:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert sorted(finished) == ["done", "done", "done", "failed"]
    jobs.close()


def test_a_restart_shows_cut_short_jobs_as_interrupted(tmp_path: Path) -> None:
    clock = FakeClock()
    started = threading.Event()
    never = threading.Event()

    def run(job: ExportJob) -> ExportOutcome:
        started.set()
        never.wait(5)
        raise RuntimeError("stopped")

    before = ExportJobs(tmp_path / "jobs", run, clock.utc_ns, workers=1, queue_max=4)
    running = before.submit("c1", "sam")
    started.wait(5)
    queued = before.submit("c2", "sam")
    after = ExportJobs(tmp_path / "jobs", run, clock.utc_ns, workers=1, queue_max=4)  # the node came back
    for job_id in (running.job_id, queued.job_id):
        job = after.get(job_id)
        assert job is not None and job.state == "failed" and job.error is not None and "interrupted" in job.error
    assert after.get("../../etc") is None
    never.set()
    before.close()
