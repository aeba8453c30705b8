"""`slimline registry ...` and `slimline ui`: browsing and managing the MLflow model registry."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import click

from slimline.cli.common import fail, guarded
from slimline.pipelines.errors import FatalInputError

URI_HELP = "MLflow tracking store [default: $MLFLOW_TRACKING_URI, else sqlite:///slimline.db]."


def _browser(ctx: click.Context, uri: str | None) -> Any:
    from slimline.registry.browse import Browser
    from slimline.registry.store import check_reachable, resolve_uri

    resolved = resolve_uri(uri)
    try:
        check_reachable(resolved)
        return Browser(resolved)
    except FatalInputError as exc:
        fail(ctx, exc)


def _metric(value: float | None, key: str) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}x" if key == "speedup_vs_baseline" else f"{value:.4g}"


@click.group()
def registry() -> None:
    """Browse and manage registered models (NAME, NAME@alias or NAME/version)."""


@registry.command("ls")
@click.option("--tracking-uri", default=None, help=URI_HELP)
@click.pass_context
def ls_cmd(ctx: click.Context, tracking_uri: str | None) -> None:
    """Registered models: the champion's row and the latest version's, with key metrics."""
    from rich.console import Console
    from rich.table import Table

    from slimline.registry.browse import KEY_METRICS

    rows = _browser(ctx, tracking_uri).ls()
    table = Table(title=f"registered models ({len(rows)})")
    for col in ("model", "versions", "aliases", "row", "version", "variant", *KEY_METRICS):
        table.add_column(col)
    for r in rows:
        aliases = ", ".join(f"{a}=v{v}" for a, v in sorted(r["aliases"].items())) or "-"
        # The champion first, then the latest version when it is another one: never the latest's
        # numbers in the champion's row.
        shown = [(r["champion"]["alias"], r["champion"])] if r["champion"] else []
        if not r["champion"] or r["champion"]["version"] != r["latest"]:
            shown.append(("latest", r))
        for i, (what, v) in enumerate(shown):
            metrics = [_metric(v["metrics"].get(k), k) for k in KEY_METRICS]
            head = [r["name"], str(r["versions"]), aliases] if i == 0 else ["", "", ""]
            table.add_row(*head, what, v["version"], v["label"], *metrics)
    Console(width=None if sys.stdout.isatty() else 200).print(table)


@registry.command()
@click.argument("ref")
@click.option("--tracking-uri", default=None, help=URI_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def show(ctx: click.Context, ref: str, tracking_uri: str | None, as_json: bool) -> None:
    """Metrics, lineage, technique configs and the ONNX location of one version."""
    from slimline.registry.browse import Ref

    info = guarded(ctx, lambda: _browser(ctx, tracking_uri).show(Ref.parse(ref)))
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"{info['name']} version {info['version']}  aliases: {', '.join(info['aliases']) or '-'}")
    click.echo(f"variant   {info['variant']}: {info['label']}")
    click.echo(f"pruning   {json.dumps(info['pruning'])}")
    click.echo(f"quantize  {json.dumps(info['quantization'])}")
    click.echo("metrics   " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(info["metrics"].items())))
    for k, v in sorted(info["lineage"].items()):
        click.echo(f"  {k:<18} {v}")
    click.echo(f"model     {info['source']} (run {info['run_id']})")
    click.echo(f"onnx      {info['onnx_path']}")


@registry.command()
@click.argument("name")
@click.argument("a")
@click.argument("b")
@click.option("--tracking-uri", default=None, help=URI_HELP)
@click.pass_context
def compare(ctx: click.Context, name: str, a: str, b: str, tracking_uri: str | None) -> None:
    """Metrics of two versions or aliases of NAME side by side (A and B: 3, v3 or @champion)."""
    from rich.console import Console
    from rich.table import Table

    got = guarded(ctx, lambda: _browser(ctx, tracking_uri).compare(name, a, b))
    (ka, ma), (kb, mb) = got.items()
    table = Table(title=f"{name}: {ka} vs {kb}")
    for col in ("metric", ka, kb, "ratio"):
        table.add_column(col)
    for key in sorted(set(ma) | set(mb)):
        va, vb = ma.get(key), mb.get(key)
        ratio = f"{vb / va:.3f}" if va and vb is not None else "-"
        table.add_row(key, _metric(va, key), _metric(vb, key), ratio)
    Console().print(table)


@registry.command()
@click.argument("name")
@click.argument("version")
@click.option("--alias", required=True, help="Alias to point at VERSION.")
@click.option("--tracking-uri", default=None, help=URI_HELP)
@click.pass_context
def promote(ctx: click.Context, name: str, version: str, alias: str, tracking_uri: str | None) -> None:
    """Point ALIAS at NAME/VERSION by hand."""
    from slimline.registry.store import alias_problem

    problem = alias_problem(alias)  # a bad alias is bad whatever the store holds: said first
    if problem is not None:
        fail(ctx, FatalInputError(f"--alias {alias!r}: {problem}"))
    guarded(ctx, lambda: _browser(ctx, tracking_uri).promote(name, version.lstrip("v"), alias))
    click.echo(f"{name}@{alias} -> version {version.lstrip('v')}")


@registry.command()
@click.argument("ref")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(), help="Folder to write into.")
@click.option("--force", is_flag=True, help="Write into a folder that is not empty.")
@click.option("--tracking-uri", default=None, help=URI_HELP)
@click.pass_context
def pull(ctx: click.Context, ref: str, out_dir: str, force: bool, tracking_uri: str | None) -> None:
    """Download the ONNX model (with its tokenizer) of REF into an empty folder."""
    from slimline.registry.browse import Ref

    path = guarded(ctx, lambda: _browser(ctx, tracking_uri).pull(Ref.parse(ref), Path(out_dir), force))
    click.echo(str(path))


@registry.command()
@click.option("--tracking-uri", default=None, help=URI_HELP)
@click.pass_context
def repair(ctx: click.Context, tracking_uri: str | None) -> None:
    """Bring a SQLite store to this MLflow's schema (one whose creation was cut off is recreated)."""
    from slimline.registry.store import repair_sqlite, resolve_uri, sqlite_path

    uri = resolve_uri(tracking_uri)
    db = sqlite_path(uri)
    if db is None:
        fail(
            ctx,
            FatalInputError(
                f"{uri}: repair handles SQLite stores; for a database run: mlflow db upgrade <uri>"
            ),
        )
    click.echo(guarded(ctx, lambda: repair_sqlite(db)))


@registry.command()
@click.argument("run_dir", type=click.Path())
@click.option("--tracking-uri", default=None, help=URI_HELP)
@click.pass_context
def push(ctx: click.Context, run_dir: str, tracking_uri: str | None) -> None:
    """Register a finished run from its folder (after the tracking server was away)."""
    from slimline.pipelines.run.publish import publish
    from slimline.pipelines.uris import resolve_uri
    from slimline.registry.adapter import MlflowRegistry

    folder = Path(run_dir)
    spec, manifest = guarded(ctx, lambda: _run_folder(folder))
    spec_uri = spec.registry.tracking_uri
    if spec_uri and "***" in spec_uri:  # spec.json keeps no secrets: the real URI comes from here
        spec_uri = None
        if not (tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")):
            fail(
                ctx,
                FatalInputError(
                    f"{run_dir}/spec.json: its tracking URI's secret is masked; "
                    "give --tracking-uri or MLFLOW_TRACKING_URI"
                ),
            )
    reg = MlflowRegistry(resolve_uri(tracking_uri, spec_uri))
    guarded(ctx, reg.check)
    manifest = publish(reg, manifest, spec, folder)
    echo_registered(manifest)


def _run_folder(folder: Path) -> tuple[Any, dict[str, Any]]:
    """The spec and manifest of a finished run's folder, or FatalInputError naming what is wrong."""
    from pydantic import ValidationError

    from slimline.pipelines.manifest import Manifest
    from slimline.pipelines.spec.spec import Spec, format_validation
    from slimline.tasks.base import read_json_or_none

    if not (folder / "manifest.json").is_file() or not (folder / "spec.json").is_file():
        raise FatalInputError(f"{folder}: expected a run folder with manifest.json and spec.json")
    data = read_json_or_none(folder / "spec.json", "spec.json")
    if not isinstance(data, dict):
        raise FatalInputError(f"{folder / 'spec.json'}: <root>: expected a JSON object of spec keys")
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        raise FatalInputError(format_validation(exc, str(folder / "spec.json"))) from None
    manifest = Manifest.load(folder / "manifest.json").to_json()
    _locate_graphs(folder, manifest, spec.registry.log_models == "all")
    return spec, manifest


def _locate_graphs(folder: Path, manifest: dict[str, Any], every: bool) -> None:
    """Point each graph the push registers at this artifact root (a moved or copied root keeps
    its stages beside the run folder); FatalInputError when one is nowhere."""
    from slimline.pipelines.run.records import DONE

    wanted = set(manifest.get("selected") or [])
    for i, row in enumerate(manifest["variants"]):
        if row["id"] not in wanted and not (every and row.get("status") in DONE):
            continue
        graph = row.get("onnx")
        if not isinstance(graph, str) or not graph:
            where = f"{folder / 'manifest.json'}: variants[{i}].onnx"
            raise FatalInputError(f"{where}: expected the path of variant {row['id']}'s graph")
        here = folder.parent / "stages" / graph.rpartition("/stages/")[2] if "/stages/" in graph else None
        if here is not None and here.exists():
            row["onnx"] = str(here)
        elif not Path(graph).exists():
            raise FatalInputError(
                f"{folder / 'manifest.json'}: variants[{i}].onnx: {graph} does not exist "
                f"(expected the graph of variant {row['id']}; run the spec again to rebuild it)"
            )


def echo_registered(manifest: dict[str, Any]) -> None:
    """What a run registered, where, and what the champion gate decided."""
    store = f" in {manifest['registry']}" if manifest.get("registry") else ""
    for r in manifest.get("registered", []):
        aliases = f" [{', '.join(r['aliases'])}]" if r.get("aliases") else ""
        click.echo(f"registered {r['name']} version {r['version']}{aliases} ({r['variant']}){store}")
    from slimline.pipelines.report.report import verdict_lines
    from slimline.pipelines.run.peers import outcome_line

    outcome = outcome_line(manifest.get("peers"))
    for line in ([outcome] if outcome else []) + verdict_lines(manifest):
        click.echo(line)


# MLflow's own notice of its default host check: true of every local UI, so not worth a line.
_UI_NOTICE = "[MLflow] Security middleware enabled with default settings"


@click.command()
@click.option("--tracking-uri", default=None, help=URI_HELP)
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True)
@click.pass_context
def ui(ctx: click.Context, tracking_uri: str | None, port: int) -> None:
    """Start the MLflow UI on 127.0.0.1 for the configured store."""
    import subprocess

    from slimline.registry.store import artifact_root, require_store, resolve_uri

    uri = resolve_uri(tracking_uri)
    if uri.startswith(("http://", "https://")):
        click.echo(f"{uri} is a tracking server: open it in a browser")
        return
    guarded(ctx, lambda: require_store(uri))
    exe = shutil.which("mlflow") or str(Path(sys.executable).with_name("mlflow"))
    cmd = [exe, "ui", "--backend-store-uri", uri, "--registry-store-uri", uri, "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--workers", "1"]  # one browsing user: one worker, a quarter the memory
    root = artifact_root(uri)
    if root:
        cmd += ["--default-artifact-root", root]
    click.echo(f"MLflow UI for {uri} on http://127.0.0.1:{port} (Ctrl-C to stop)", err=True)
    if ctx.obj and ctx.obj.get("debug"):  # everything MLflow, uvicorn and Starlette say
        os.execv(cmd[0], cmd)
    # Quiet by default: MLflow's and uvicorn's INFO lines and Starlette's deprecation warnings say
    # nothing a user can act on; warnings and errors still come through.
    cmd += ["--uvicorn-opts", "--log-level warning"]
    env = os.environ | {"MLFLOW_LOGGING_LEVEL": "WARNING", "PYTHONWARNINGS": "ignore"}
    with subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True, errors="replace") as proc:
        assert proc.stderr is not None
        try:
            for line in proc.stderr:
                if not line.startswith(_UI_NOTICE):
                    sys.stderr.write(line)
        except KeyboardInterrupt:  # a terminal's Ctrl-C reached the UI too; a kill -INT did not
            proc.terminate()
            proc.wait()
            sys.exit(130)
    sys.exit(proc.returncode if proc.returncode >= 0 else 128 - proc.returncode)  # killed: 128+signal
