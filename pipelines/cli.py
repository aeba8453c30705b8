"""The `slimline` command line: the composition root that picks the adapters."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from pipelines.errors import FatalInputError


def _fatal(exc: Exception, debug: bool) -> None:
    if debug:
        raise exc
    click.echo(f"error: {exc}", err=True)
    sys.exit(getattr(exc, "exit_code", 2))


def _spec_or_exit(ctx: click.Context, spec_path: str) -> Any:
    """The validated spec, or exit 2 with its one-line error."""
    from pipelines.spec import load_spec

    try:
        return load_spec(spec_path)
    except FatalInputError as exc:
        _fatal(exc, ctx.obj["debug"])


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="slimline")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """slimline: compress transformer models and get them ready to ship."""
    ctx.obj = {"debug": debug}
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


@main.command()
@click.argument("spec_path", type=click.Path())
@click.pass_context
def validate(ctx: click.Context, spec_path: str) -> None:
    """Validate SPEC: exit 0, or exit 2 with one line naming the file, field and expectation."""
    from pipelines.spec import variant_axes

    p, q = variant_axes(_spec_or_exit(ctx, spec_path))
    click.echo(f"{spec_path}: valid ({len(p)} pruning x {len(q)} quantization settings)")


@main.command()
@click.argument("spec_path", type=click.Path())
@click.pass_context
def plan(ctx: click.Context, spec_path: str) -> None:
    """Dry run: print the stage graph, every variant, skipped ones with their reason, and resources."""
    from rich.console import Console
    from rich.tree import Tree

    from pipelines.plan import build_plan

    spec = _spec_or_exit(ctx, spec_path)
    p = build_plan(spec, "dry-run")
    console = Console()
    nodes: dict[str | None, Any] = {
        None: Tree(f"[bold]{spec.name}[/]: {len(p.stages)} stages, {len(p.variants)} variants")
    }
    for st in p.stages.values():  # parents always precede children in insertion order
        res = ", ".join(f"{k}={v:g}" for k, v in st.resources.items())
        nodes[st.id] = nodes[st.parent].add(f"{st.kind}: {st.label} [dim]({st.id}; {res})[/]")
    console.print(nodes[None])
    for v in p.variants:
        if v.status == "skipped":
            console.print(f"[yellow]skipped[/] {v.label}: {v.reason}")


@main.command()
@click.argument("spec_path", type=click.Path())
@click.option(
    "--executor",
    type=click.Choice(["local"]),
    default="local",
    show_default=True,
    help="local: in-process and serial (debugging).",
)
@click.option("--threads", type=int, default=1, show_default=True, help="Torch/ORT threads per task.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@click.pass_context
def run(ctx: click.Context, spec_path: str, executor: str, threads: int, as_json: bool) -> None:
    """Run the sweep in SPEC and write <artifacts>/<run_id>/manifest.json."""
    from pipelines.ports import LocalExecutor
    from pipelines.run import run as run_pipeline
    from tasks.base import TaskError

    spec = _spec_or_exit(ctx, spec_path)
    try:
        manifest = run_pipeline(spec, LocalExecutor(), threads=threads)
    except TaskError as exc:  # bad model source or data: still bad input, still one line
        _fatal(FatalInputError(f"{spec_path}: {exc}"), ctx.obj["debug"])
        return
    if as_json:
        click.echo(json.dumps(manifest, indent=2, default=str))
    else:
        _print_table(manifest)
        click.echo(f"manifest: {Path(spec.artifacts) / manifest['run_id'] / 'manifest.json'}")
    sys.exit(1 if manifest["status"] == "failed" else 0)


def _print_table(manifest: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{manifest['run_id']} ({manifest['status']})")
    for col in ("variant", "status", "fidelity", "p50 ms", "speedup", "size MB", "note"):
        table.add_column(col)
    selected = manifest["selected"]
    for v in manifest["variants"]:
        m = v["metrics"]
        mark = f"selected #{selected.index(v['id']) + 1}" if v["id"] in selected else (v.get("reason") or "")
        table.add_row(
            v["label"],
            v["status"],
            _f(m.get("fidelity"), 4),
            _f(m.get("latency_p50_ms"), 2),
            _f(m.get("speedup_vs_baseline"), 2, "x"),
            _f(m.get("size_mb"), 1),
            mark[:60],
        )
    Console().print(table)


def _f(value: float | None, digits: int, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{suffix}"


@main.command()
def doctor() -> None:
    """Show the versions and ONNX Runtime providers slimline would use here."""
    from importlib.metadata import PackageNotFoundError, version

    import onnxruntime as ort

    from tasks.runtime import cuda_usable

    for pkg in ("torch", "transformers", "onnx", "onnxruntime-gpu", "onnxruntime", "ray", "mlflow"):
        try:
            click.echo(f"{pkg:<16} {version(pkg)}")
        except PackageNotFoundError:
            continue
    click.echo(f"{'python':<16} {sys.version.split()[0]}")
    click.echo(f"{'providers':<16} {', '.join(ort.get_available_providers())}")
    click.echo(f"{'cuda usable':<16} {cuda_usable()}")


if __name__ == "__main__":
    main()
