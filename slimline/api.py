"""The Python API: the same validation, run, gate and registration as the `slimline` command line.

    import slimline
    spec = slimline.validate("pipelines/examples/minilm-cpu.yaml")   # a path, a dict or a Spec
    manifest = slimline.run(spec, executor="local", registry="mlflow")
    model = slimline.load("minilm-compressed@champion")               # what `slimline serve` serves
    vectors = model.embed(["a sentence", "another one"])

This module and `slimline.cli` are the composition root: the only code that picks adapters
(executors, registries, searchers), through the name -> factory tables in `slimline.adapters`.
Errors are the classes whose one-line messages the CLI prints: `SpecError` (a bad spec),
`FatalInputError` (other bad input: an unreachable store, a missing model) and `TaskError`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slimline.pipelines.errors import FatalInputError, SpecError
from slimline.tasks.base import TaskError

if TYPE_CHECKING:
    from slimline.pipelines.manifest import Manifest
    from slimline.pipelines.plan.plan import Plan
    from slimline.pipelines.ports import Executor, Observer, Registry
    from slimline.pipelines.spec.spec import Spec
    from slimline.tasks.serving import Predictor

try:
    __version__ = version("slimline")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["FatalInputError", "SpecError", "TaskError", "__version__", "load", "plan", "run", "validate"]


def validate(spec: str | os.PathLike[str] | Mapping[str, Any] | Spec) -> Spec:
    """The validated spec: from a YAML file's path, a dict (as the YAML would hold) or a Spec.

    Raises SpecError with one line naming the file (or `<spec>`), the field path and what was
    expected; technique settings and the search space are checked too, as `slimline validate` does.
    """
    from slimline.pipelines.plan.space import check_space
    from slimline.pipelines.spec.spec import Spec, load_spec, parse_spec
    from slimline.tasks.base import TaskError
    from slimline.tasks.load import is_gguf, resolve_source

    if isinstance(spec, Spec):
        return spec
    where = "<spec>" if isinstance(spec, Mapping) else str(spec)
    checked = parse_spec(dict(spec)) if isinstance(spec, Mapping) else load_spec(spec)
    if is_gguf(checked.model.source):  # header, tensor table and architecture: no weights read
        try:
            resolve_source(checked.model.source)
        except TaskError as exc:
            raise SpecError(f"{where}: {exc}") from None
    if checked.search is not None:
        try:
            check_space(checked)  # every choice and both ends of every range decode
        except SpecError as exc:
            raise SpecError(f"{where}: {exc}") from None
    return checked


def plan(spec: str | os.PathLike[str] | Mapping[str, Any] | Spec) -> Plan:
    """The dry-run plan (what `slimline plan` prints): every stage and variant, skipped ones with
    their reason. Stage ids here hash the model's path; a run hashes its content."""
    from slimline.pipelines.plan.plan import build_plan
    from slimline.pipelines.run.peers import peers_for

    s = validate(spec)
    return build_plan(s, "dry-run", peers=peers_for(s))


def run(
    spec: str | os.PathLike[str] | Mapping[str, Any] | Spec,
    *,
    executor: str | Executor = "ray",
    registry: str | Registry = "mlflow",
    address: str | None = None,
    tracking_uri: str | None = None,
    threads: int | None = None,
    max_in_flight: int | None = None,
    tick_id: str | None = None,
    observer: Observer | None = None,
    debug: bool = False,
) -> Manifest:
    """Run the sweep (or search) of `spec`, then register the selection and apply the champion gate.

    `executor`: "ray" (an embedded Ray, or the cluster at `address`), "local" (in-process, serial),
    a plug-in's name, or an Executor. `registry`: "mlflow" (at `tracking_uri`, else the spec's, else
    $MLFLOW_TRACKING_URI, else sqlite:///slimline.db), "none" (in memory), or a Registry. Returns the
    manifest also written to <artifacts>/<run_id>/manifest.json. A registry that fails while
    publishing raises; the manifest on disk keeps everything (`slimline registry push` retries).
    """
    from slimline.pipelines import leases
    from slimline.pipelines.manifest import Manifest
    from slimline.pipelines.run.publish import publish
    from slimline.pipelines.run.records import RunStatus

    s = validate(spec)
    reg = registry_for(registry, s, tracking_uri)
    options = {"threads": threads, "max_in_flight": max_in_flight, "tick_id": tick_id}
    # The stages the run reads stay leased (safe from gc) until they are registered.
    with leases.holding(Path(s.artifacts.path).resolve() / "stages"):
        manifest = sweep(s, executor, reg, address=address, observer=observer, debug=debug, **options)
        if manifest["status"] != RunStatus.FAILED:
            manifest = publish(reg, manifest, s, Path(s.artifacts.path) / manifest["run_id"])
    return Manifest.model_validate(manifest)


def sweep(
    spec: Spec,
    executor: str | Executor,
    registry: Registry,
    *,
    address: str | None = None,
    observer: Observer | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
    debug: bool = False,
    checked: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """The run before publishing: checks (store reachable, model and data readable: exit-2 errors
    before any cluster starts; `checked`: the caller did them), then the grid or the search."""
    from slimline.adapters import executor_for, searcher_for, serving_probe
    from slimline.pipelines.run.run import preflight
    from slimline.pipelines.run.run import run as run_plan
    from slimline.pipelines.run.search import search_and_run

    if not checked:
        registry.check()
        preflight(spec)
    if spec.evaluate.serving is not None:  # the pick is served and loaded after selection
        options.setdefault("serving", serving_probe())
    with executor_for(executor, spec, address=address, debug=debug) as ex:
        if spec.search is not None:
            searcher = searcher_for("tune", debug=debug)
            return search_and_run(
                spec, ex, searcher, observer=observer, registry=registry, on_result=on_result, **options
            )
        return run_plan(spec, ex, observer=observer, registry=registry, **options)


def registry_for(
    registry: str | Registry, spec: Spec | None = None, tracking_uri: str | None = None
) -> Registry:
    """A Registry by name ("mlflow", "none", a plug-in's) or as given."""
    from slimline.adapters import registry_for as pick

    return pick(registry, spec, tracking_uri)


def load(
    ref: str | os.PathLike[str],
    *,
    tracking_uri: str | None = None,
    device: str = "cpu",
    threads: int | None = None,
    max_length: int | None = None,
) -> Predictor:
    """A Predictor for REF: NAME@alias, NAME/version or NAME in the registry (pulled once into the
    serving cache), or a local graph folder (model.onnx, meta.json, tokenizer). It answers
    `.embed`, `.classify` or `.score` (by the model's task) exactly as `slimline serve` does."""
    from slimline.tasks.serving import Predictor

    folder = Path(ref)
    if not (folder / "model.onnx").is_file():
        from slimline.adapters import cache_root, registry_source
        from slimline.pipelines.uris import resolve_uri

        source = registry_source(resolve_uri(tracking_uri), str(ref), cache_root())
        folder = Path(source.local_folder())
    return Predictor(folder, device=device, threads=threads, max_length=max_length)
