"""Cluster submission through the Ray Jobs API: `slimline run` as a job, with a deterministic id."""

from __future__ import annotations

import os
import re
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from slimline.pipelines.errors import FatalInputError
from slimline.pipelines.uris import DEFAULT_URI, masked

T = TypeVar("T")

# Never upload these, wherever they sit: environments, caches, secrets, stores, models, artifacts.
# Ray also honours every .gitignore (and .rayignore) in the uploaded tree, unless the uploading
# machine sets RAY_RUNTIME_ENV_IGNORE_GITIGNORE=1; these apply either way.
EXCLUDES = [
    ".git",
    ".venv",
    "__pycache__",
    ".env*",
    "artifacts",
    "mlartifacts",
    "mlruns",
    "test-artifacts",
    "*.db",
    "*.db-journal",
    "*.db-wal",
    "*.db-shm",
    "*.onnx",
    "*.onnx.data",
    "*.safetensors",
    "*.bin",
    "*.pt",
]
AGENT_WAIT_S = 300
RETRYABLE = ("FAILED", "STOPPED")
MAX_ATTEMPTS = 20
# How a shell, or Python with --with-project, says that the job's environment lacks slimline.
_NO_CLI = re.compile(r"slimline: (?:command )?not found|No module named '?slimline\b")
_HTTP = re.compile(r"Request failed with status code (\d+): ?(.*)", re.S)


class DashboardUnreachable(FatalInputError):
    """The Ray dashboard (Jobs API) does not answer (exit 2)."""


class NotARayDashboard(FatalInputError):
    """Something answers at the address, but not Ray's Jobs API (exit 2)."""


class JobsApiError(FatalInputError):
    """The Jobs API refused a request (exit 2, one line)."""


def check_dashboard(address: str, timeout: float = 5.0) -> bool:
    """Raise unless the Jobs API answers at `address`, naming it; True if it asks for Ray's token auth."""
    import requests  # what Ray's Jobs client speaks: user:password@ in the address included

    shown = masked(address)
    if not re.match(r"https?://[^/]", address):
        raise NotARayDashboard(f"--address: expected a dashboard URL such as http://HEAD:8265 (got {shown})")
    try:
        res = requests.get(address.rstrip("/") + "/api/version", timeout=timeout)
    except requests.Timeout:
        raise DashboardUnreachable(
            f"--address: Ray dashboard {shown} is unreachable (no answer in {timeout:g}s)"
        ) from None
    except requests.RequestException as exc:
        errno = re.search(r"\[Errno [^\]]+\] [^)'\"]+", str(exc))
        reason = errno.group(0) if errno else type(exc).__name__
        raise DashboardUnreachable(f"--address: Ray dashboard {shown} is unreachable ({reason})") from None
    if res.status_code == 401:  # token auth, which the Jobs client then provides
        return True
    if res.status_code != 200:
        raise NotARayDashboard(f"{shown}: not a Ray dashboard (HTTP {res.status_code})")
    try:
        answer = res.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or "ray_version" not in answer:
        raise NotARayDashboard(f"{shown}: not a Ray dashboard (HTTP 200, no Ray version at /api/version)")
    return False


def one_line(exc: BaseException, address: str) -> str:
    """A Jobs API error as one line: HTTP bodies can be whole HTML pages or tracebacks."""
    text = str(exc).strip() or type(exc).__name__
    http = _HTTP.match(text)
    if not http:
        return text.splitlines()[0][:300]
    code, shown = http.group(1), masked(address)
    lines = [ln.strip() for ln in http.group(2).splitlines() if ln.strip()] or [""]
    if lines[0].startswith("<"):
        return f"{shown}: not a Ray Jobs API answer (HTTP {code})"
    # Ray answers some refusals with a whole traceback: its last line is the reason.
    reason = lines[-1] if lines[0].startswith("Traceback") else lines[0]
    return f"{shown} answered HTTP {code}" + (f": {reason.rstrip('.')[:200]}" if reason else "")


def submission_id(spec_name: str, spec_hash: str, tick: str | None) -> str:
    """Deterministic: the same spec and tick always submit under the same id."""
    return f"slimline-{spec_name}-{spec_hash[:12]}-{tick or 'adhoc'}".lower()


def attempt_id(job_id: str, attempt: int) -> str:
    """The id of a retry: the first attempt is the plain id, then `-r2`, `-r3`..."""
    return job_id if attempt == 1 else f"{job_id}-r{attempt}"


def entrypoint(spec_rel: str, tick: str | None, *, with_project: bool, extra: list[str] | None = None) -> str:
    """The job's command line: `slimline run` on the spec, relative to the job's working directory.

    When the project travels with the job (the image lacks slimline), the CLI runs as a module
    from the uploaded working directory, which Ray also puts on every worker's import path.
    """
    cli = ["python", "-m", "slimline"] if with_project else ["slimline"]
    return shlex.join([*cli, "run", spec_rel, *(["--tick-id", tick] if tick else []), *(extra or [])])


def _anchored(path: Path, root: Path) -> str | None:
    """A gitignore pattern for exactly `path`, when it lies strictly inside `root`."""
    if path == root or not path.is_relative_to(root):
        return None
    return "/" + re.sub(r"([\\*?\[\]])", r"\\\1", path.relative_to(root).as_posix())


def upload_excludes(root: Path, spec: Any, cwd: Path | None = None) -> list[str]:
    """EXCLUDES plus the spec's own artifact root and SQLite store, wherever they lie under `root`.

    A relative path means the job's working directory (`root`) in the job, and `cwd` where a local
    `slimline run` wrote it: both are left out.
    """
    root, cwd = root.resolve(), (cwd or Path.cwd()).resolve()
    uris = {spec.registry.tracking_uri, os.environ.get("MLFLOW_TRACKING_URI"), DEFAULT_URI}
    stored = [uri[len("sqlite:///") :] for uri in uris if uri and uri.startswith("sqlite:///")]
    artifacts = spec.artifacts.path
    extra: list[str] = []
    for raw in [artifacts, *stored]:
        for base in (root, cwd):
            pattern = _anchored((base / raw).resolve(), root)
            if pattern and pattern not in extra:
                extra.append(pattern)
    return [*EXCLUDES, *extra]


def upload_plan(spec_path: Path, spec: Any, with_project: bool) -> tuple[Path, str, list[str]]:
    """(folder to upload, the spec's path inside it, excludes); refuses a spec the job could not see."""
    spec_path = spec_path.resolve()
    root = Path.cwd().resolve() if with_project else spec_path.parent
    if not spec_path.is_relative_to(root):
        raise FatalInputError(
            f"--with-project: {spec_path} is outside {root}, the folder that is uploaded, so the job "
            "could not read it; copy the spec into that folder and submit the copy"
        )
    return root, spec_path.relative_to(root).as_posix(), upload_excludes(root, spec)


def runtime_env(working_dir: Path, excludes: list[str] | None = None) -> dict[str, Any]:
    """The job's working directory (the spec's folder, or the project), without models or artifacts."""
    return {"working_dir": str(working_dir), "excludes": EXCLUDES if excludes is None else excludes}


def _auth_token() -> str | None:
    """Ray's token, from where Ray's own clients read it."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return os.environ["RAY_AUTH_TOKEN"].strip()
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


@dataclass(frozen=True)
class Submission:
    id: str
    new: bool  # False: an attempt is pending, running or has succeeded (a no-op)
    previous: str | None = None  # the status of the attempt this one retries
    retried: str | None = None  # and its id


class Jobs:
    """A thin, typed wrapper over JobSubmissionClient: every refusal is one line (exit 2)."""

    def __init__(self, address: str) -> None:
        from ray.job_submission import JobSubmissionClient

        headers = None
        if check_dashboard(address):
            token = _auth_token()
            if token:
                # A header, not RAY_AUTH_MODE=token: Ray caches the mode per process, and the variable
                # would also reach (and break) an embedded Ray started later by this process.
                headers = {"Authorization": f"Bearer {token}"}
            else:  # Ray's own lookup may know more places
                os.environ.setdefault("RAY_AUTH_MODE", "token")
        self.address = address
        try:
            self.client = JobSubmissionClient(address, headers=headers)
        except Exception as exc:  # its version check raises requests' and JSON errors as they come
            raise NotARayDashboard(
                f"{masked(address)}: not a Ray dashboard ({one_line(exc, address)})"
            ) from None

    def _api(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except FatalInputError:
            raise
        except Exception as exc:
            raise JobsApiError(f"{what}: {one_line(exc, self.address)}") from None

    def _status_or_none(self, job_id: str) -> str | None:
        try:
            return str(self.client.get_job_info(job_id).status.value)
        except Exception as exc:  # the Jobs API raises a plain RuntimeError, 404 for an unknown id
            if "status code 404" in str(exc):
                return None
            raise JobsApiError(f"job {job_id}: {one_line(exc, self.address)}") from None

    def next_attempt(self, job_id: str) -> Submission:
        """The attempt to submit: the first whose id is free, unless one is pending, running or done."""
        previous: str | None = None
        for attempt in range(1, MAX_ATTEMPTS + 1):
            candidate = attempt_id(job_id, attempt)
            status = self._status_or_none(candidate)
            if status is None:
                retried = attempt_id(job_id, attempt - 1) if previous else None
                return Submission(candidate, True, previous, retried)
            if status not in RETRYABLE:
                return Submission(candidate, False)
            previous = status
        # A tick that failed this often needs a fix, not one more attempt (nor a scheduler retrying forever).
        raise JobsApiError(f"job {job_id}: {MAX_ATTEMPTS} attempts ended {previous}; not retrying again")

    def submit(self, job_id: str, entry: str, env: dict[str, Any], metadata: dict[str, str]) -> Submission:
        """Submit unless an attempt is pending, running or done; a failed or stopped one is retried."""
        sub = self.next_attempt(job_id)
        if not sub.new:
            return sub
        env = {**env, "env_vars": {**env.get("env_vars", {}), "SLIMLINE_SUBMISSION_ID": sub.id}}
        deadline = time.monotonic() + AGENT_WAIT_S
        while True:
            try:
                self._api(
                    f"submit {sub.id}",
                    lambda: self.client.submit_job(
                        entrypoint=entry, submission_id=sub.id, runtime_env=env, metadata=metadata
                    ),
                )
                return sub
            except JobsApiError as exc:
                # A head that has just started has no job agent yet; that passes within seconds.
                if "No available agent" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(2)

    def status(self, job_id: str) -> str:
        """The job's status name (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED)."""
        return self._api(f"job {job_id}", lambda: str(self.client.get_job_status(job_id).value))

    def logs(self, job_id: str) -> str:
        """Everything the job has printed so far."""
        return self._api(f"job {job_id}", lambda: str(self.client.get_job_logs(job_id)))

    def diagnosis(self, job_id: str, status: str) -> str | None:
        """One line with the fix when a job failed because its environment cannot run slimline."""
        if status != "FAILED":
            return None
        info = self._api(f"job {job_id}", lambda: self.client.get_job_info(job_id))
        if not _NO_CLI.search(f"{getattr(info, 'message', '') or ''}\n{self.logs(job_id)}"):
            return None
        return (
            f"job {job_id}: the cluster's environment cannot run `slimline` (not installed where the job "
            "ran); resubmit with --with-project from the slimline checkout, or install slimline in the "
            "cluster image"
        )

    def follow(self, job_id: str, out: Any, err: Any = None) -> str:
        """Stream the job's logs to `out` until it ends; returns the final status.

        A job that failed for want of slimline on the cluster says so on `err` (default stderr).
        """
        import asyncio
        import sys

        async def tail() -> None:
            async for chunk in self.client.tail_job_logs(job_id):
                out.write(chunk)
                out.flush()

        self._api(f"job {job_id}", lambda: asyncio.run(tail()))
        status = self.status(job_id)
        hint = self.diagnosis(job_id, status)
        if hint:
            print(hint, file=err or sys.stderr, flush=True)
        return status

    def ls(self) -> list[dict[str, Any]]:
        """Every job the cluster knows, newest first."""
        jobs = self._api("jobs ls", self.client.list_jobs)
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
        return self._api(f"job {job_id}", lambda: bool(self.client.stop_job(job_id)))
