"""The composition root's name -> factory tables: executors, registries, searchers, serve sources.

Built-ins are listed here; plug-ins add names through entry points (groups `slimline.executors`,
`slimline.registries`, `slimline.searchers`), each pointing at a factory with the built-ins'
signature. A plug-in never replaces a built-in name. Only this module, `slimline.api` and
`slimline.cli` import `slimline.cluster` and `slimline.registry` (checked by import-linter).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from functools import partial
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slimline.pipelines.errors import FatalInputError

if TYPE_CHECKING:
    from slimline.cluster.serve import ServeSource
    from slimline.pipelines.ports import Executor, Registry
    from slimline.pipelines.spec.spec import Spec

# An executor factory: (spec, address, debug) -> a context manager yielding the Executor.
ExecutorFactory = Callable[..., contextlib.AbstractContextManager[Any]]
RegistryFactory = Callable[[str | None, "Spec | None"], Any]  # (tracking_uri, spec) -> Registry
SearcherFactory = Callable[..., Any]  # (debug=...) -> a searcher with .search(problem, trial, log, ...)


@contextlib.contextmanager
def _local(spec: Spec, *, address: str | None = None, debug: bool = False) -> Iterator[Executor]:
    from slimline.pipelines.run.local import LocalExecutor

    yield LocalExecutor(reraise=debug)


@contextlib.contextmanager
def _ray(spec: Spec, *, address: str | None = None, debug: bool = False) -> Iterator[Executor]:
    from slimline.cluster.ray_executor import RayExecutor

    with RayExecutor(
        address=address,
        cpus_per_task=spec.resources.cpus_per_task,
        gpus_per_task=spec.resources.gpus_per_task,
        verbose=debug,
    ) as ex:
        yield ex


def _mlflow(tracking_uri: str | None, spec: Spec | None) -> Registry:
    from slimline.pipelines.uris import resolve_uri
    from slimline.registry.adapter import MlflowRegistry

    return MlflowRegistry(resolve_uri(tracking_uri, spec.registry.tracking_uri if spec else None))


def _memory(tracking_uri: str | None, spec: Spec | None) -> Registry:
    from slimline.registry.memory import InMemoryRegistry

    return InMemoryRegistry()


def _tune(*, debug: bool = False) -> Any:
    from slimline.cluster.tune import TuneSearcher

    return TuneSearcher(verbose=debug)


def serving_probe() -> Any:
    """The ServingProbe of `evaluate.serving`: Ray Serve on loopback (cluster.serve_probe)."""
    from slimline.cluster.serve_probe import ServeProbe

    return ServeProbe()


EXECUTORS: dict[str, ExecutorFactory] = {"ray": _ray, "local": _local}
REGISTRIES: dict[str, RegistryFactory] = {"mlflow": _mlflow, "none": _memory}
SEARCHERS: dict[str, SearcherFactory] = {"tune": _tune}


def table(builtin: dict[str, Any], group: str) -> dict[str, Any]:
    """The built-ins plus the plug-ins installed under entry-point `group` (loaded when named)."""
    found = dict(builtin)
    for ep in entry_points(group=group):
        found.setdefault(ep.name, ep)  # loaded lazily below: a broken plug-in breaks only its own name
    return found


def _pick(builtin: dict[str, Any], group: str, name: str, what: str) -> Any:
    known = table(builtin, group)
    if name not in known:
        raise FatalInputError(f"unknown {what} {name!r}; known: {', '.join(sorted(known))}")
    factory = known[name]
    return factory if name in builtin else factory.load()


def executor_for(
    executor: str | Executor, spec: Spec, *, address: str | None = None, debug: bool = False
) -> contextlib.AbstractContextManager[Executor]:
    """A context manager yielding the Executor named (or the one given, left open)."""
    if not isinstance(executor, str):
        return contextlib.nullcontext(executor)
    return _pick(EXECUTORS, "slimline.executors", executor, "executor")(spec, address=address, debug=debug)


def registry_for(registry: str | Registry, spec: Spec | None, tracking_uri: str | None = None) -> Registry:
    """The Registry named (or the one given)."""
    if not isinstance(registry, str):
        return registry
    return _pick(REGISTRIES, "slimline.registries", registry, "registry")(tracking_uri, spec)


def searcher_for(name: str, *, debug: bool = False) -> Any:
    """The searcher named (`tune`: Ray Tune, sampler × scheduler from the spec's `search:`)."""
    return _pick(SEARCHERS, "slimline.searchers", name, "searcher")(debug=debug)


def cache_root() -> Path:
    """Where pulled versions are kept for serving and `slimline.load`."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "slimline" / "serve"


def registry_source(uri: str, ref: str, cache: Path | None = None) -> ServeSource:
    """The version REF names (NAME@alias, NAME/version or NAME), pulled under `cache` when given."""
    from slimline.cluster.serve import ServeSource
    from slimline.registry.browse import Browser, Ref, cached_pull, lineage_of, pull_version
    from slimline.registry.store import check_reachable

    check_reachable(uri)
    parsed = Ref.parse(ref)
    browser = Browser(uri)
    mv = browser.version(parsed)
    lineage = lineage_of(mv)
    return ServeSource(
        str(cached_pull(browser, mv, cache)) if cache is not None else None,
        name=mv.name,
        version=str(mv.version),
        alias=parsed.alias,
        variant=lineage.get("variant_id"),
        lineage=lineage,
        fetch=partial(pull_version, uri, mv.name, str(mv.version)),
    )


def serve_app(args: dict[str, Any]) -> Any:
    """Serve application builder a RayService imports (`slimline.adapters:serve_app`): args
    {"ref": "NAME@alias", "serve": {ServeConfig fields}}; the store is $MLFLOW_TRACKING_URI."""
    from slimline.cluster.serve import application
    from slimline.pipelines.spec.serve import ServeConfig
    from slimline.pipelines.uris import resolve_uri

    cfg = ServeConfig.model_validate(args.get("serve") or {})
    return application(registry_source(resolve_uri(None), str(args["ref"])), cfg)
