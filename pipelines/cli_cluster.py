"""`slimline submit`, `slimline jobs ...` and `slimline schedule`: clusters and schedules."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

from .cli_common import fail, guarded, spec_or_exit
from .errors import FatalInputError

ADDRESS_HELP = "Ray dashboard address, e.g. http://HEAD:8265."


def _jobs(ctx: click.Context, address: str) -> Any:
    from ..cluster.submit import Jobs

    try:
        return Jobs(address)
    except FatalInputError as exc:
        fail(ctx, exc)


def submit_spec(
    jobs: Any, spec_path: Path, spec: Any, tick: str | None, with_project: bool
) -> tuple[str, bool]:
    """Submit `slimline run` on the spec as a Ray job; (submission id, newly submitted)."""
    from ..cluster.submit import entrypoint, runtime_env, submission_id

    spec_path = spec_path.resolve()
    root = Path.cwd().resolve() if with_project else spec_path.parent
    rel = str(spec_path.relative_to(root)) if spec_path.is_relative_to(root) else spec_path.name
    job_id = submission_id(spec.name, spec.digest(), tick)
    entry = entrypoint(rel, tick, with_project=with_project)
    meta = {"slimline.spec": spec.name, "slimline.spec_hash": spec.digest(), "slimline.tick": tick or ""}
    return jobs.submit(job_id, entry, runtime_env(root), meta)


@click.command()
@click.argument("spec_path", type=click.Path())
@click.option("--address", required=True, help=ADDRESS_HELP)
@click.option("--wait", is_flag=True, help="Stream the job's logs and exit with its outcome.")
@click.option("--tick-id", default=None, help="The scheduled tick this submission is (deterministic id).")
@click.option(
    "--with-project", is_flag=True, help="Upload this project too (for a cluster image without slimline)."
)
@click.pass_context
def submit(
    ctx: click.Context, spec_path: str, address: str, wait: bool, tick_id: str | None, with_project: bool
) -> None:
    """Submit SPEC to a Ray cluster as a job running `slimline run` (resubmitting a tick is a no-op)."""
    spec = spec_or_exit(ctx, spec_path)
    jobs = _jobs(ctx, address)
    job_id, new = submit_spec(jobs, Path(spec_path), spec, tick_id, with_project)
    click.echo(f"{'submitted' if new else 'already submitted'}: {job_id}")
    if wait:
        status = jobs.follow(job_id, sys.stdout)
        click.echo(f"{job_id}: {status}")
        sys.exit(0 if status == "SUCCEEDED" else 1)


@click.group()
def jobs() -> None:
    """Jobs on a Ray cluster: ls, status, logs, stop."""


@jobs.command("ls")
@click.option("--address", required=True, help=ADDRESS_HELP)
@click.pass_context
def jobs_ls(ctx: click.Context, address: str) -> None:
    """Every job the cluster knows, newest first."""
    for row in _jobs(ctx, address).ls():
        click.echo(f"{row['id']:<60} {row['status']:<10} {row['entrypoint']}")


@jobs.command("status")
@click.argument("job_id")
@click.option("--address", required=True, help=ADDRESS_HELP)
@click.pass_context
def jobs_status(ctx: click.Context, job_id: str, address: str) -> None:
    """One job's status."""
    click.echo(guarded(ctx, lambda: _jobs(ctx, address).status(job_id), f"job {job_id}"))


@jobs.command("logs")
@click.argument("job_id")
@click.option("--address", required=True, help=ADDRESS_HELP)
@click.pass_context
def jobs_logs(ctx: click.Context, job_id: str, address: str) -> None:
    """Everything a job has printed."""
    click.echo(guarded(ctx, lambda: _jobs(ctx, address).logs(job_id), f"job {job_id}"), nl=False)


@jobs.command("stop")
@click.argument("job_id")
@click.option("--address", required=True, help=ADDRESS_HELP)
@click.pass_context
def jobs_stop(ctx: click.Context, job_id: str, address: str) -> None:
    """Ask a job to stop."""
    stopped = guarded(ctx, lambda: _jobs(ctx, address).stop(job_id), f"job {job_id}")
    click.echo(f"{job_id}: {'stopping' if stopped else 'had already ended'}")


@click.command()
@click.argument("spec_path", type=click.Path())
@click.option("--next", "next_n", type=int, default=None, help="Print the next N fire times and exit.")
@click.option(
    "--emit", type=click.Choice(["crontab", "systemd", "k8s"]), default=None, help="Print a scheduler config."
)
@click.option(
    "--once", is_flag=True, help="Run the tick of the latest fire time (if due and not done), then exit."
)
@click.option(
    "--address", default=None, help="Submit each tick to this Ray cluster instead of running locally."
)
@click.pass_context
def schedule(
    ctx: click.Context, spec_path: str, next_n: int | None, emit: str | None, once: bool, address: str | None
) -> None:
    """Run SPEC on its `schedule.cron`: in the foreground, once per invocation, or via a real scheduler."""
    import datetime as dt

    from .schedule import Scheduler, fire_times, tick_of

    spec = spec_or_exit(ctx, spec_path)
    if spec.schedule is None:
        fail(
            ctx, FatalInputError(f"{spec_path}: schedule: missing (expected schedule: {{cron: '0 3 * * *'}})")
        )
    cron = spec.schedule.cron  # validated with the spec
    if next_n is not None:
        for at in fire_times(cron, dt.datetime.now(dt.UTC), next_n):
            click.echo(f"{at.isoformat()}  tick {tick_of(spec.digest(), at).id}")
        return
    if emit is not None:
        click.echo(_emit(emit, spec, Path(spec_path), address), nl=False)
        return
    if address:
        _jobs(ctx, address)  # an unreachable dashboard is exit 2 now, not at the first tick

    def run_tick(tick: Any) -> int:
        click.echo(f"tick {tick.id} ({tick.at.isoformat()})", err=True)
        if address:
            from ..cluster.submit import Jobs

            jobs = Jobs(address)
            job_id, _ = submit_spec(jobs, Path(spec_path), spec, tick.id, with_project=False)
            return 0 if jobs.follow(job_id, sys.stdout) == "SUCCEEDED" else 1
        exe = str(Path(sys.executable).with_name("slimline"))
        return subprocess.run([exe, "run", spec_path, "--tick-id", tick.id], check=False).returncode

    state = Path(spec.artifacts) / "schedule"
    sched = Scheduler(spec.digest(), cron, spec.schedule.missed, run_tick, state)
    try:
        while True:
            for tick, code in sched.step():
                click.echo(
                    f"tick {tick.id}: {'skipped (done or busy)' if code is None else f'exit {code}'}",
                    err=True,
                )
            if once:
                return
            time.sleep(sched.seconds_to_next() + 1)
    except KeyboardInterrupt:
        sys.exit(130)


def _emit(kind: str, spec: Any, spec_path: Path, address: str | None) -> str:

    workdir = Path.cwd().resolve()
    exe = str(Path(sys.executable).with_name("slimline"))
    if kind == "crontab":
        from .schedule_emit import crontab

        return crontab(spec.schedule.cron, spec_path, workdir, exe, address)
    if kind == "systemd":
        from .schedule_emit import systemd

        files = systemd(f"slimline-{spec.name}", spec.schedule.cron, spec_path, workdir, exe, address)
        return "".join(f"# --- {name}\n{text}\n" for name, text in files.items())
    from ..cluster.kuberay import cronjob, dump_all

    return dump_all(cronjob(f"slimline-{spec.name}", spec.schedule.cron, spec_path.read_text()))
