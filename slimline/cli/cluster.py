"""`slimline submit` and `slimline jobs ...`: Ray clusters."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from slimline.cli.common import fail, guarded, safe_id, spec_or_exit
from slimline.pipelines.errors import FatalInputError

ADDRESS_HELP = "Ray dashboard address, e.g. http://HEAD:8265."


def jobs_client(ctx: click.Context, address: str) -> Any:
    from slimline.cluster.submit import Jobs

    try:
        return Jobs(address)
    except FatalInputError as exc:
        fail(ctx, exc)


def submit_spec(
    jobs: Any, spec_path: Path, spec: Any, tick: str | None, with_project: bool
) -> tuple[str, bool]:
    """Submit `slimline run` on the spec as a Ray job; (submission id, newly submitted).

    A tick whose last attempt failed or was stopped is submitted again, under the next attempt id.
    """
    from slimline.cluster.submit import entrypoint, runtime_env, submission_id, upload_plan

    root, rel, excludes = upload_plan(spec_path, spec, with_project)
    job_id = submission_id(spec.name, spec.digest(), tick)
    entry = entrypoint(rel, tick, with_project=with_project)
    meta = {"slimline.spec": spec.name, "slimline.spec_hash": spec.digest(), "slimline.tick": tick or ""}
    sub = jobs.submit(job_id, entry, runtime_env(root, excludes), meta)
    if sub.previous:
        click.echo(f"retrying: previous attempt {sub.previous} ({sub.retried})", err=True)
    return sub.id, sub.new


@click.command()
@click.argument("spec_path", type=click.Path())
@click.option("--address", required=True, help=ADDRESS_HELP)
@click.option("--wait", is_flag=True, help="Stream the job's logs and exit with its outcome.")
@click.option(
    "--tick-id",
    default=None,
    callback=lambda ctx, param, value: safe_id(value),
    help="The scheduled tick this submission is (deterministic id).",
)
@click.option(
    "--with-project", is_flag=True, help="Upload this project too (for a cluster image without slimline)."
)
@click.pass_context
def submit(
    ctx: click.Context, spec_path: str, address: str, wait: bool, tick_id: str | None, with_project: bool
) -> None:
    """Submit SPEC to a Ray cluster as a job running `slimline run`.

    Resubmitting a tick is a no-op, unless its last attempt failed or was stopped: then it is retried.
    """
    from slimline.cluster.submit import upload_plan

    spec = spec_or_exit(ctx, spec_path)
    guarded(ctx, lambda: upload_plan(Path(spec_path), spec, with_project))  # before the network
    jobs = jobs_client(ctx, address)
    job_id, new = guarded(ctx, lambda: submit_spec(jobs, Path(spec_path), spec, tick_id, with_project))
    click.echo(f"{'submitted' if new else 'already submitted'}: {job_id}")
    if wait:
        status = guarded(ctx, lambda: jobs.follow(job_id, sys.stdout))
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
    client = jobs_client(ctx, address)
    for row in guarded(ctx, client.ls):
        click.echo(f"{row['id']:<60} {row['status']:<10} {row['entrypoint']}")


@jobs.command("status")
@click.argument("job_id")
@click.option("--address", required=True, help=ADDRESS_HELP)
@click.pass_context
def jobs_status(ctx: click.Context, job_id: str, address: str) -> None:
    """One job's status; a job that failed for want of slimline on the cluster also says so on stderr."""
    client = jobs_client(ctx, address)
    status = guarded(ctx, lambda: client.status(job_id), f"job {job_id}")
    click.echo(status)
    hint = guarded(ctx, lambda: client.diagnosis(job_id, status), f"job {job_id}")
    if hint:
        click.echo(hint, err=True)


@jobs.command("logs")
@click.argument("job_id")
@click.option("--address", required=True, help=ADDRESS_HELP)
@click.pass_context
def jobs_logs(ctx: click.Context, job_id: str, address: str) -> None:
    """Everything a job has printed."""
    click.echo(guarded(ctx, lambda: jobs_client(ctx, address).logs(job_id), f"job {job_id}"), nl=False)


@jobs.command("stop")
@click.argument("job_id")
@click.option("--address", required=True, help=ADDRESS_HELP)
@click.pass_context
def jobs_stop(ctx: click.Context, job_id: str, address: str) -> None:
    """Ask a job to stop."""
    stopped = guarded(ctx, lambda: jobs_client(ctx, address).stop(job_id), f"job {job_id}")
    click.echo(f"{job_id}: {'stopping' if stopped else 'had already ended'}")
