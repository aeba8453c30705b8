"""Resubmitting a failed or stopped tick, and saying why a job failed when the cluster lacks slimline.

A stand-in for Ray's JobSubmissionClient; tests/integration/test_ray_jobs.py runs both on a real head.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from ray.job_submission import JobStatus as Status

ADDRESS = "http://127.0.0.1:9"
NOT_FOUND = "/bin/sh: 1: slimline: not found\n"


@dataclass
class Info:
    status: Status
    message: str = ""
    logs: str = ""


class FakeClient:
    """The slice of JobSubmissionClient that Jobs uses, over a dict of jobs."""

    def __init__(self, address: str) -> None:
        self.jobs: dict[str, Info] = {}
        self.submitted: list[str] = []
        self.ends: dict[str, Status] = {}  # what a job becomes once its logs have been tailed

    def get_job_info(self, job_id: str) -> Info:
        if job_id not in self.jobs:
            raise RuntimeError(f"Request failed with status code 404: Job {job_id} does not exist.")
        return self.jobs[job_id]

    def get_job_status(self, job_id: str) -> Status:
        return self.get_job_info(job_id).status

    def get_job_logs(self, job_id: str) -> str:
        return self.get_job_info(job_id).logs

    async def tail_job_logs(self, job_id: str) -> AsyncIterator[str]:
        yield self.get_job_info(job_id).logs
        if job_id in self.ends:
            self.jobs[job_id].status = self.ends[job_id]

    def submit_job(self, *, entrypoint: str, submission_id: str, runtime_env: dict, metadata: dict) -> str:
        assert submission_id not in self.jobs
        self.submitted.append(submission_id)
        self.jobs[submission_id] = Info(Status.PENDING)
        return submission_id


@pytest.fixture()
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeClient:
    import ray.job_submission

    from slimline.cluster import submit

    client = FakeClient(ADDRESS)
    monkeypatch.setattr(submit, "check_dashboard", lambda address: False)
    monkeypatch.setattr(ray.job_submission, "JobSubmissionClient", lambda address, **kw: client)
    return client


@pytest.fixture()
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(
        yaml.safe_dump(
            {"version": 1, "name": "tiny", "model": {"source": "/m", "task": "feature-extraction"}}
        )
    )
    return path


def _submit(cli: Any, spec: Path, *extra: str) -> tuple[Any, str]:
    res = cli("submit", str(spec), "--address", ADDRESS, "--tick-id", "t1", *extra)
    return res, res.stdout.splitlines()[0].split(": ", 1)[1] if res.stdout else ""


@pytest.mark.parametrize("ended", [Status.FAILED, Status.STOPPED])
def test_a_failed_or_stopped_tick_is_retried_under_the_next_attempt_id(fake, cli, spec, ended) -> None:
    first, job_id = _submit(cli, spec)
    assert first.returncode == 0 and first.stdout.startswith("submitted: ") and first.stderr == ""
    fake.jobs[job_id].status = ended
    second, retry = _submit(cli, spec)
    assert second.returncode == 0 and second.stdout.startswith(f"submitted: {job_id}-r2")
    assert second.stderr.strip() == f"retrying: previous attempt {ended.value} ({job_id})"
    fake.jobs[retry].status = ended
    third, again = _submit(cli, spec)
    assert again == f"{job_id}-r3" and f"({job_id}-r2)" in third.stderr
    assert fake.submitted == [job_id, f"{job_id}-r2", f"{job_id}-r3"]


@pytest.mark.parametrize("active", [Status.PENDING, Status.RUNNING, Status.SUCCEEDED])
def test_a_pending_running_or_succeeded_attempt_is_a_no_op(fake, cli, spec, active) -> None:
    _, job_id = _submit(cli, spec)
    fake.jobs[job_id].status = Status.FAILED
    _, retry = _submit(cli, spec)
    fake.jobs[retry].status = active
    res, same = _submit(cli, spec)
    assert res.returncode == 0 and res.stdout.startswith(f"already submitted: {retry}") and same == retry
    assert res.stderr == "" and len(fake.submitted) == 2


def test_a_job_without_slimline_on_the_cluster_says_so_with_the_fix(fake, cli, spec) -> None:
    _, job_id = _submit(cli, spec)
    fake.jobs[job_id] = Info(Status.FAILED, "exit code 127", NOT_FOUND)
    status = cli("jobs", "status", job_id, "--address", ADDRESS)
    assert status.returncode == 0 and status.stdout.strip() == "FAILED"
    hint = status.stderr.strip()
    assert "\n" not in hint and "--with-project" in hint and "cluster image" in hint and job_id in hint

    fake.jobs[job_id].status, fake.ends[job_id] = Status.RUNNING, Status.FAILED
    waited, _ = _submit(cli, spec, "--wait")  # follows the running attempt to its end
    assert waited.returncode == 1 and waited.stdout.rstrip().endswith(f"{job_id}: FAILED")
    assert NOT_FOUND.strip() in waited.stdout and waited.stderr.strip() == hint


@pytest.mark.parametrize(
    "logs", ["bash: line 1: slimline: command not found\n", "/usr/bin/python: No module named slimline\n"]
)
def test_other_shells_and_python_say_it_too(fake, cli, spec, logs: str) -> None:
    _, job_id = _submit(cli, spec)
    fake.jobs[job_id] = Info(Status.FAILED, "", logs)
    assert "--with-project" in cli("jobs", "status", job_id, "--address", ADDRESS).stderr


def test_other_failures_and_successes_get_no_hint(fake, cli, spec) -> None:
    _, job_id = _submit(cli, spec)
    fake.jobs[job_id] = Info(Status.FAILED, "", "error: spec.yaml: model.source: no such folder\n")
    assert cli("jobs", "status", job_id, "--address", ADDRESS).stderr == ""
    fake.jobs[job_id] = Info(Status.SUCCEEDED, "", NOT_FOUND)  # a succeeded job's output is its own
    assert cli("jobs", "status", job_id, "--address", ADDRESS).stderr == ""


def test_retries_stop_at_a_cap_with_one_line(fake, cli, spec, monkeypatch: pytest.MonkeyPatch) -> None:
    from slimline.cluster import submit

    monkeypatch.setattr(submit, "MAX_ATTEMPTS", 3)
    for _ in range(3):
        _, job_id = _submit(cli, spec)
        fake.jobs[job_id].status = Status.FAILED
    res, _ = _submit(cli, spec)
    assert res.returncode == 2 and res.stderr.strip().endswith("3 attempts ended FAILED; not retrying again")
    assert len(fake.submitted) == 3
