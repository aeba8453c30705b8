"""`slimline gc`: free disk under a spec's artifact root (pipelines.gc says what is kept)."""

from __future__ import annotations

from pathlib import Path

import click

from slimline.cli.common import fail, spec_or_exit
from slimline.pipelines.errors import FatalInputError


def human(n: float) -> str:
    """Bytes as a short decimal size: 2.2 GB."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


@click.command()
@click.argument("spec_path", type=click.Path())
@click.option("--dry-run", is_flag=True, help="List what would be removed; remove nothing.")
@click.option("--max-size", default=None, help="Remove the oldest removable only until under this (5GB).")
@click.pass_context
def gc(ctx: click.Context, spec_path: str, dry_run: bool, max_size: str | None) -> None:
    """Remove stage outputs under SPEC's artifact root that `artifacts.keep` does not keep."""
    from slimline.pipelines.run import gc as collect

    spec = spec_or_exit(ctx, spec_path)
    try:
        limit = collect.parse_size(max_size) if max_size is not None else None
    except ValueError as exc:
        fail(ctx, FatalInputError(f"--max-size {exc}"))
    root = Path(spec.artifacts.path)
    todo = collect.plan(root, spec.artifacts.keep, limit)
    if not dry_run:
        collect.apply(root, todo)
    verb = "would remove" if dry_run else "removed"
    for sid in todo.remove if dry_run else []:
        click.echo(f"  {sid}")
    click.echo(
        f"{root}: {verb} {len(todo.remove)} stages ({human(todo.freed)}), kept {todo.kept} "
        f"(artifacts.keep: {spec.artifacts.keep}); stages {human(todo.before)} -> {human(todo.after)}"
        + (f"; {len(todo.busy)} in use, left" if todo.busy else "")
        + (f"; {len(todo.leased)} read by a running run, left" if todo.leased else "")
    )
    for sid, who in sorted(todo.leased.items()):
        click.echo(f"  left {sid}: {who} reads it")
