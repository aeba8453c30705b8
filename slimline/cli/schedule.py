"""`slimline schedule`: run a spec on its cron, once per invocation, or through a real scheduler."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

from slimline.cli.cluster import jobs_client, submit_spec
from slimline.cli.common import fail, guarded, spec_or_exit
from slimline.pipelines.errors import FatalInputError


@click.command()
@click.argument("spec_path", type=click.Path())
@click.option(
    "--next",
    "next_n",
    type=click.IntRange(1, 10_000),
    default=None,
    help="Print the next N fire times and exit.",
)
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

    from slimline.pipelines.schedule.schedule import Scheduler, fire_times, tick_of

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
        click.echo(guarded(ctx, lambda: _emit(emit, spec, Path(spec_path), address)), nl=False)
        return
    if address:
        jobs_client(ctx, address)  # an unreachable dashboard is exit 2 now, not at the first tick

    def run_tick(tick: Any) -> int:
        click.echo(f"tick {tick.id} ({tick.at.isoformat()})", err=True)
        try:
            return _run_tick(spec_path, spec, tick.id, address)
        except Exception as exc:  # a dashboard error at tick time fails this tick, not the scheduler
            click.echo(f"error: tick {tick.id}: {_one_line(exc)}", err=True)
            return int(getattr(exc, "exit_code", 1))

    state = Path(spec.artifacts.path) / "schedule"
    sched = Scheduler(spec.digest(), cron, spec.schedule.missed, run_tick, state)
    try:
        while True:
            worst = 0
            try:
                fired = sched.step()
            except Exception as exc:  # e.g. the state folder is not writable: say so, try again later
                click.echo(f"error: schedule: {_one_line(exc)}", err=True)
                fired, worst = [], 1
            for tick, code in fired:
                click.echo(
                    f"tick {tick.id}: {'skipped (done or busy)' if code is None else f'exit {code}'}",
                    err=True,
                )
                worst = worst or (code or 0)
            if once:
                ctx.exit(worst)  # a failed tick fails the crontab / systemd / Kubernetes job too
            time.sleep(sched.seconds_to_next() + 1)
    except KeyboardInterrupt:
        sys.exit(130)


def _one_line(exc: Exception) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def _run_tick(spec_path: str, spec: Any, tick_id: str, address: str | None) -> int:
    """One tick: a cluster submission followed to its end, or a local `slimline run`; its exit code."""
    if address:
        from slimline.cluster.submit import Jobs

        jobs = Jobs(address)
        job_id, _ = submit_spec(jobs, Path(spec_path), spec, tick_id, with_project=False)
        return 0 if jobs.follow(job_id, sys.stdout) == "SUCCEEDED" else 1
    exe = str(Path(sys.executable).with_name("slimline"))
    return subprocess.run([exe, "run", spec_path, "--tick-id", tick_id], check=False).returncode


def _emit(kind: str, spec: Any, spec_path: Path, address: str | None) -> str:
    """The scheduler config; FatalInputError for a value the format cannot hold."""
    from slimline.pipelines.schedule.emit import cron_text, crontab, plain, systemd

    workdir = Path.cwd().resolve()
    exe = str(Path(sys.executable).with_name("slimline"))
    name = f"slimline-{plain(spec.name, 'name')}"
    if kind == "crontab":
        return crontab(spec.schedule.cron, spec_path, workdir, exe, address)
    if kind == "systemd":
        files = systemd(name, spec.schedule.cron, spec_path, workdir, exe, address)
        return "".join(f"# --- {file}\n{text}\n" for file, text in files.items())
    from slimline.cluster.kuberay import cronjob, dump_all, secret_name
    from slimline.pipelines.uris import masked

    cron = cron_text(spec.schedule.cron, "Kubernetes")
    docs = dump_all(cronjob(name, cron, spec_path.read_text(), spec_hash=spec.digest()))
    uri = spec.registry.tracking_uri
    if not uri:
        return docs
    return (
        f"# The runs read registry.tracking_uri ({masked(uri)}) from a Secret; create it first:\n"
        f"#   kubectl create secret generic {secret_name(name)} --from-literal=uri='<the URI>'\n{docs}"
    )
