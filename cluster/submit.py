"""Cluster submission through the Ray Jobs API: `slimline run` as a job, with a deterministic id."""

from __future__ import annotations

import os
import shlex
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ..pipelines.errors import FatalInputError

# Never upload these with the working directory: models, artifacts, stores, environments.
EXCLUDES = [
    ".git",
    ".venv",
    "artifacts",
    "mlartifacts",
    "mlruns",
    "test-artifacts",
    "*.db",
    "*.onnx",
    "*.onnx.data",
    "*.safetensors",
    "*.bin",
    "*.pt",
    "__pycache__",
]
AGENT_WAIT_S = 300


class DashboardUnreachable(FatalInputError):
    """The Ray dashboard (Jobs API) does not answer (exit 2)."""


def check_dashboard(address: str, timeout: float = 5.0) -> bool:
    """Raise DashboardUnreachable, naming the address, unless the Jobs API answers.

    Returns whether the dashboard asks for Ray's token authentication.
    """
    url = address.rstrip("/") + "/api/version"
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return False
    except urllib.error.HTTPError as exc:
        return exc.code == 401  # it answered; 401 is token auth, which the Jobs client then provides
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DashboardUnreachable(f"--address: Ray dashboard {address} is unreachable ({reason})") from None


def submission_id(spec_name: str, spec_hash: str, tick: str | None) -> str:
    """Deterministic: the same spec and tick always submit under the same id."""
    return f"slimline-{spec_name}-{spec_hash[:12]}-{tick or 'adhoc'}".lower()


def entrypoint(spec_rel: str, tick: str | None, *, with_project: bool, extra: list[str] | None = None) -> str:
    """The job's command line: `slimline run` on the spec, relative to the job's working directory.

    When the project travels with the job (the image lacks slimline), the CLI runs as a module
    from the uploaded working directory, which Ray also puts on every worker's import path.
    """
    cli = ["python", "-m", "slimline"] if with_project else ["slimline"]
    return shlex.join([*cli, "run", spec_rel, *(["--tick-id", tick] if tick else []), *(extra or [])])


def runtime_env(working_dir: Path) -> dict[str, Any]:
    """The job's working directory (the spec's folder, or the project), without models or artifacts."""
    return {"working_dir": str(working_dir), "excludes": EXCLUDES}


class Jobs:
    """A thin, typed wrapper over JobSubmissionClient."""

    def __init__(self, address: str) -> None:
        if check_dashboard(address):
            # Clients only send the token (~/.ray/auth_token, or RAY_AUTH_TOKEN) in token mode.
            os.environ.setdefault("RAY_AUTH_MODE", "token")
        from ray.job_submission import JobSubmissionClient

        self.address = address
        self.client = JobSubmissionClient(address)

    def submit(
        self, job_id: str, entry: str, env: dict[str, Any], metadata: dict[str, str]
    ) -> tuple[str, bool]:
        """Submit unless a job with this id exists; returns (id, newly submitted)."""
        try:
            self.client.get_job_info(job_id)
            return job_id, False  # the same tick again: a no-op
        except Exception:  # the Jobs API raises a plain RuntimeError for an unknown id
            pass
        env = {**env, "env_vars": {**env.get("env_vars", {}), "SLIMLINE_SUBMISSION_ID": job_id}}
        deadline = time.monotonic() + AGENT_WAIT_S
        while True:
            try:
                self.client.submit_job(
                    entrypoint=entry, submission_id=job_id, runtime_env=env, metadata=metadata
                )
                return job_id, True
            except RuntimeError as exc:
                # A head that has just started has no job agent yet; that passes within seconds.
                if "No available agent" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(2)

    def status(self, job_id: str) -> str:
        """The job's status name (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED)."""
        return str(self.client.get_job_status(job_id).value)

    def logs(self, job_id: str) -> str:
        """Everything the job has printed so far."""
        return str(self.client.get_job_logs(job_id))

    def follow(self, job_id: str, out: Any) -> str:
        """Stream the job's logs to `out` until it ends; returns the final status."""
        import asyncio

        async def tail() -> None:
            async for chunk in self.client.tail_job_logs(job_id):
                out.write(chunk)
                out.flush()

        asyncio.run(tail())
        return self.status(job_id)

    def ls(self) -> list[dict[str, Any]]:
        """Every job the cluster knows, newest first."""
        jobs = self.client.list_jobs()
        rows = [
            {
                "id": j.submission_id,
                "status": str(j.status.value),
                "entrypoint": j.entrypoint,
                "start": j.start_time,
                "end": j.end_time,
            }
            for j in jobs
        ]
        return sorted(rows, key=lambda r: r["start"] or 0, reverse=True)

    def stop(self, job_id: str) -> bool:
        """Ask the job to stop; False when it had already ended."""
        return bool(self.client.stop_job(job_id))
