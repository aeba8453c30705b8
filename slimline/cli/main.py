"""The `slimline` command line: the composition root that picks the adapters."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from slimline.cli.cluster import jobs, submit
from slimline.cli.common import OneLineErrors, fail, guarded, safe_id, spec_or_exit, stdout_to_stderr
from slimline.cli.gc import gc
from slimline.cli.registry import echo_registered, registry, ui
from slimline.cli.schedule import schedule
from slimline.cli.serve import serve
from slimline.pipelines.errors import FatalInputError
from slimline.pipelines.ports import Registry


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
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
    from slimline.pipelines.spec.spec import variant_axes

    spec = spec_or_exit(ctx, spec_path)
    if spec.search is not None:  # a search is described as one: its grid axes are only defaults
        from slimline.pipelines.plan.space import dimensions

        s = spec.search
        trials = "every grid point" if s.sampler == "grid" else f"{s.trials} trials"
        rungs = f"{len(s.rungs)} rung" + ("s" if len(s.rungs) != 1 else "")
        click.echo(
            f"{spec_path}: valid (search {s.label}: {s.sampler} sampler, {s.scheduler} scheduler, "
            f"{trials} over {len(dimensions(s.space))} dimensions, {rungs})"
        )
        return
    p, q = variant_axes(spec)
    click.echo(f"{spec_path}: valid ({len(p)} pruning x {len(q)} quantization settings)")


@main.command()
@click.argument("spec_path", type=click.Path())
@click.pass_context
def plan(ctx: click.Context, spec_path: str) -> None:
    """Dry run: print the stage graph, every variant, skipped ones with their reason, and resources."""
    from rich.console import Console
    from rich.tree import Tree

    from slimline.pipelines.run.records import Status
    from slimline.pipelines.run.run import prepare
    from slimline.pipelines.run.stage import cached
    from slimline.tasks.base import TaskError

    spec = spec_or_exit(ctx, spec_path)
    root = Path(spec.artifacts.path).resolve() / "stages"
    try:  # the run's own ids: its data and model digests (cached in the artifact root) included
        p, stage_ctx = prepare(spec, root, peers=True)
    except (FatalInputError, TaskError) as exc:
        fail(ctx, FatalInputError(f"{spec_path}: {exc}"))
    done = {sid for sid in p.stages if cached(stage_ctx, sid) is not None}
    console = Console()
    todo = len(p.stages) - len(done)
    title = f"[bold]{spec.name}[/]: {len(p.stages)} stages ({len(done)} cached, {todo} to run)"
    nodes: dict[str | None, Any] = {None: Tree(f"{title}, {len(p.variants)} variants")}
    for st in p.stages.values():  # parents always precede children in insertion order
        res = ", ".join(f"{k}={v:g}" for k, v in st.resources.items())
        state = "[green]cached[/]" if st.id in done else "to run"
        nodes[st.id] = nodes[st.parent].add(f"{st.kind}: {st.label} [dim]({st.id}; {res})[/] {state}")
    console.print(nodes[None])
    for v in p.variants:
        if v.status == Status.SKIPPED:
            console.print(f"[yellow]skipped[/] {v.label}: {v.reason}")
    if spec.search is not None:
        _plan_search(console, spec)


def _plan_search(console: Any, spec: Any) -> None:
    """A search's dry run: its dimensions, the grid's size, the rungs and the trials to sample."""
    import math

    from slimline.pipelines.plan.space import check_space

    dims = check_space(spec)
    search = spec.search
    sizes = [d.size() for d in dims]  # counted: a fine step must not build its values
    grid = math.prod(s for s in sizes if s) if all(sizes) else None
    console.print(
        f"[bold]search[/] ({search.label}): the grid above is the baseline; "
        f"{search.trials if search.sampler != 'grid' else grid} trials over {len(dims)} dimensions"
        + (f" ({grid} grid points)" if grid else " (continuous)"),
        highlight=False,
    )
    for d in dims:
        where = f"{len(d.values)} choices" if d.kind == "choice" else f"{d.kind} in [{d.low:g}, {d.high:g}]"
        console.print(f"  {d.name}: {where}" + (f", step {d.step:g}" if d.step else ""), highlight=False)
    for i, r in enumerate(search.rungs):
        console.print(f"  rung {i}: eval_samples {r.eval_samples}, distill_fraction {r.distill_fraction:g}")


@main.command()
@click.argument("spec_path", type=click.Path())
@click.option(
    "--executor",
    type=click.Choice(["ray", "local"]),
    default="ray",
    show_default=True,
    help="ray: stages as Ray tasks (embedded, or on --address); local: in-process and serial (debugging).",
)
@click.option("--address", default=None, help="Attach to this Ray cluster instead of starting one.")
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="Torch/ORT threads per task [default: cpus_per_task].",
)
@click.option(
    "--max-in-flight",
    type=click.IntRange(min=1),
    default=None,
    help="Bound on tasks in flight [default: one per worker].",
)
@click.option(
    "--registry",
    "registry_kind",
    type=click.Choice(["mlflow", "none"]),
    default="mlflow",
    show_default=True,
    help="Register the selection in MLflow, or only in memory (nothing kept).",
)
@click.option(
    "--tracking-uri", default=None, help="MLflow store [default: spec, $MLFLOW_TRACKING_URI, SQLite]."
)
@click.option(
    "--tick-id",
    default=None,
    callback=lambda ctx, param, value: safe_id(value),
    help="Scheduled tick this run is (gives a deterministic run id).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON on stdout.")
@click.pass_context
def run(
    ctx: click.Context,
    spec_path: str,
    executor: str,
    address: str | None,
    threads: int | None,
    max_in_flight: int | None,
    registry_kind: str,
    tracking_uri: str | None,
    tick_id: str | None,
    as_json: bool,
) -> None:
    """Run the sweep in SPEC; writes manifest.json and report.md/.html/.png under <artifacts>/<run_id>/."""
    from slimline.pipelines.run.records import RunStatus

    spec = spec_or_exit(ctx, spec_path)
    from slimline.api import registry_for

    reg = registry_for(registry_kind, spec, tracking_uri)
    options = {"threads": threads, "max_in_flight": max_in_flight, "tick_id": tick_id}
    # With --json, stdout is the one JSON document: whatever Ray or MLflow print goes to stderr.
    from slimline.pipelines import leases

    # The stages the run reads stay leased (safe from gc) until they are registered.
    stages = Path(spec.artifacts.path).resolve() / "stages"
    with stdout_to_stderr(as_json), leases.holding(stages):
        manifest = _sweep(ctx, spec_path, spec, reg, executor, address, options)
        code = 1 if manifest["status"] == RunStatus.FAILED else 0
        run_dir = Path(spec.artifacts.path) / manifest["run_id"]
        if code == 0:
            manifest, code = _publish(ctx, reg, manifest, spec, run_dir)
    if as_json:
        click.echo(json.dumps(manifest, indent=2, default=str))
    else:
        _print_table(manifest)
        click.echo(f"report: {run_dir / 'report.html'} (in one picture: report.png)")
        click.echo(f"manifest: {run_dir / 'manifest.json'}")
        echo_registered(manifest)
    sys.exit(code)


def _sweep(
    ctx: click.Context,
    spec_path: str,
    spec: Any,
    reg: Registry,
    executor: str,
    address: str | None,
    options: dict[str, Any],
) -> dict[str, Any]:
    """The run's manifest; bad input exits 2 with one line, Ctrl-C exits 130 once it is written."""
    from slimline.api import sweep
    from slimline.cli.interrupt import CtrlC, InterruptibleProgress
    from slimline.pipelines.run.run import preflight
    from slimline.tasks.base import TaskError

    try:
        reg.check()  # an unreachable tracking server is bad input: exit 2 before any work
        preflight(spec)  # bad model or data: exit 2 before a cluster is started
        _warn_int8(spec)
        with CtrlC() as ctrl_c, InterruptibleProgress(ctrl_c, title=spec.name) as progress:
            # Never silent while Ray starts, for a person at a terminal; a log (or a script that
            # reads an exit-2 line found once Ray is up) gets only stage events and errors.
            for line in _start_lines(reg, executor, address) if progress.console.is_terminal else []:
                if line.startswith("starting Ray"):  # 10-25 s before the first stage: a spinner
                    progress.doing(line)
                else:
                    progress.note(line)
            try:
                return sweep(
                    spec,
                    executor,
                    reg,
                    address=address,
                    observer=progress,
                    on_result=progress.trial if spec.search is not None else None,
                    debug=ctx.obj["debug"],
                    checked=True,
                    **options,
                )
            except KeyboardInterrupt:
                pass  # the manifest is written; leave the contexts (Ray shuts down), then exit 130
    except FatalInputError as exc:  # e.g. GPUs asked of a cluster with none
        fail(ctx, FatalInputError(f"{spec_path}: {exc}"))
    except TaskError as exc:  # bad model source or data: still bad input, still one line
        fail(ctx, FatalInputError(f"{spec_path}: {exc}"))
    except KeyboardInterrupt:
        pass
    click.echo(
        f"interrupted: finished stages stay cached under {spec.artifacts.path}; the manifest has the rest",
        err=True,
    )
    sys.exit(130)


def _start_lines(reg: Registry, executor: str, address: str | None) -> list[str]:
    """Where results go (a SQLite store by its absolute path, and whether this run creates it),
    and what starts now: the seconds before the first stage event are never silent."""
    from slimline.registry.store import sqlite_path

    lines = []
    db = sqlite_path(str(getattr(reg, "uri", "")))
    if db is not None:
        lines.append(f"registry: {db}" + ("" if db.exists() else " (a new store: this run creates it)"))
    if executor == "ray":
        where = f"connecting to {address}" if address else "an embedded cluster on this machine"
        lines.append(f"starting Ray: {where}")
    return lines


def _publish(
    ctx: click.Context, reg: Registry, manifest: dict[str, Any], spec: Any, run_dir: Path
) -> tuple[dict[str, Any], int]:
    """Publish a finished run; a store that went away mid-run is exit 1, with how to push later."""
    from slimline.pipelines.run.publish import publish

    try:
        return publish(reg, manifest, spec, run_dir), 0
    except Exception as exc:  # the server went away mid-run: the manifest keeps everything
        if ctx.obj["debug"]:
            raise
        from slimline.pipelines.uris import mask_secrets

        click.echo(
            f"error: registry {reg.describe()}: {type(exc).__name__}: {mask_secrets(str(exc))}; "
            f"nothing is lost, register later with: slimline registry push {run_dir}",
            err=True,
        )
        return manifest, 1


def _warn_int8(spec: Any) -> None:
    """int8 variants on a CPU without 8-bit dot products: say so before the user waits for them."""
    from slimline.pipelines.spec.spec import variant_axes
    from slimline.tasks.cpu_probe import VNNI, cpu_flags

    methods = {q.method for q in variant_axes(spec)[1] if q is not None}
    flags = cpu_flags().split()
    if spec.resources.gpus_per_task == 0 and any("int8" in m for m in methods) and not set(VNNI) & set(flags):
        click.echo(
            "warning: this CPU has no VNNI (8-bit dot products): int8 variants typically run only "
            "1.2-1.6x faster than fp32 here; `slimline doctor` measures it",
            err=True,
        )


def _print_table(manifest: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from slimline.pipelines.report.report import table_rows

    rows = table_rows(manifest)
    table = Table(title=f"{manifest['run_id']} ({manifest['status']})")
    for col in rows[0]:
        table.add_column(col, overflow="fold")
    for r in rows[1:]:
        table.add_row(*r[:-1], r[-1][:60])
    # Outside a terminal rich assumes 80 columns, which folds every cell; logs can be wide.
    Console(width=None if sys.stdout.isatty() else 200).print(table)


@main.command()
@click.option(
    "--seconds", type=click.FloatRange(1, 120), default=15, show_default=True, help="Micro-benchmark time."
)
@click.option(
    "--address", default=None, help="A Ray cluster: report every alive node instead of this machine."
)
@click.pass_context
def doctor(ctx: click.Context, seconds: float, address: str | None) -> None:
    """What this machine (or each node of a cluster) has, and whether int8 pays off on its CPU."""
    import onnxruntime as ort

    from slimline.tasks.base import package_version
    from slimline.tasks.cpu_probe import machine_facts
    from slimline.tasks.runtime import cuda_usable, provider_line

    for pkg in ("torch", "transformers", "onnx", "onnxruntime-gpu", "onnxruntime", "ray", "mlflow"):
        if (v := package_version(pkg)) is not None:
            click.echo(f"{pkg:<16} {v}")
    click.echo(f"{'python':<16} {sys.version.split()[0]}")
    click.echo(f"{'providers':<16} {provider_line(ort.get_available_providers(), cuda_usable())}")
    if address is None:
        nodes = {"this machine": machine_facts(seconds)}
    else:
        from slimline.cluster.doctor import per_node

        nodes = guarded(ctx, lambda: per_node(address, seconds), f"--address {address}")
    for where, facts in nodes.items():
        if address is not None:
            click.echo(f"node {where}")
        for key, value in facts.items():
            click.echo(f"{key:<16} {value}")


@main.command()
@click.option("--markdown", is_flag=True, help="Print the table as Markdown (the docs' technique tables).")
def techniques(markdown: bool) -> None:
    """The technique catalog: every pruning, distillation and quantization method and its settings."""
    from slimline.tasks.catalog import techniques as catalog

    order = ("prune", "distill", "quantize")  # the order a variant's stages run in
    rows = [["stage", "name", "what it does", "settings (defaults)", "needs"]]
    for name, t in sorted(catalog().items(), key=lambda kv: (order.index(kv[1].config.stage), kv[0])):
        fields = t.config.model_fields
        settings = ", ".join(
            f"`{k}`" + ("" if f.is_required() else f": {json.dumps(f.default)}")
            for k, f in sorted(fields.items(), key=lambda kv: not kv[1].is_required())  # required first
            if k != "method"
        )
        rows.append([t.config.stage, f"`{name}`", t.doc, settings, "a GPU" if t.config.needs_gpu else ""])
    if markdown:
        click.echo("\n".join("| " + " | ".join(r) + " |" for r in [rows[0], ["---"] * 5, *rows[1:]]))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="techniques")
    for col in rows[0]:
        table.add_column(col)
    for r in rows[1:]:
        table.add_row(*(c.replace("`", "") for c in r))
    Console().print(table)


main.add_command(registry)
main.add_command(ui)
main.add_command(submit)
main.add_command(jobs)
main.add_command(schedule)
main.add_command(gc)
main.add_command(serve)

if __name__ == "__main__":
    main()
