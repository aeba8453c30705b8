"""The technique catalog: every module of tasks/pruning, tasks/quantization and tasks/distillation,
plus the plug-ins installed under the entry-point group `slimline.techniques`.

A technique module binds its `apply` to its config with `@register_technique(TheConfig)`
(tasks/techniques.py); the config's `method` default is the technique's name. Adding a
technique is adding such a module: the catalog finds it, and the spec, the planner and the
executors learn what they need from the config's capabilities. `register` adds a module from
elsewhere (a test's toy technique); a plug-in package names its module as an entry point, e.g.
`[project.entry-points."slimline.techniques"] my-int8 = "my_pkg.my_int8"`.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import logging
import pkgutil
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any, Literal, overload

from slimline.tasks.base import StepConfig, TaskError, TechniqueConfig
from slimline.tasks.techniques import DistillFn, PruneFn, QuantizeFn, Technique, bound_technique

log = logging.getLogger(__name__)
PACKAGES = ("pruning", "quantization", "distillation")
ENTRY_POINTS = "slimline.techniques"


class UnknownTechnique(TaskError):
    """A technique name that is not in the catalog, or a config that no technique owns."""


_CATALOG: dict[str, Technique[Any]] = {}


def register(module: ModuleType) -> Technique[Any]:
    """Add a technique module (its `apply` bound with @register_technique) to the catalog.

    Idempotent for the same module; a module without a bound `apply`, or one whose technique
    name another config holds, is a TypeError.
    """
    _discover()  # built-ins first, so that a plug-in never hides them or takes their names
    return _add(module)


def _add(module: ModuleType | object) -> Technique[Any]:
    where = getattr(module, "__name__", repr(module))
    fn = getattr(module, "apply", None) if isinstance(module, ModuleType) else module
    found = bound_technique(fn)
    if found is None:
        raise TypeError(
            f"{where}: a technique module needs an apply() decorated with @register_technique(<its config>)"
        )
    known = _CATALOG.get(found.name)
    if known is not None and known.config is not found.config:
        raise TypeError(f"{where}: technique {found.name!r} is already {known.config.__module__}")
    _CATALOG[found.name] = found
    return found


def _plugins() -> None:
    for ep in entry_points(group=ENTRY_POINTS):
        try:
            _add(ep.load())  # a module (or its apply): loading it binds its technique
        except Exception as exc:  # a broken plug-in loses only its own techniques
            log.warning("technique plug-in %s (%s) is not loaded: %s", ep.name, ep.value, exc)


@functools.cache  # once per process; a module that fails to import is tried again next time
def _discover() -> None:
    for pkg_name in PACKAGES:
        pkg = importlib.import_module(f"{__package__}.{pkg_name}")
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_"):
                _add(importlib.import_module(f"{pkg.__name__}.{info.name}"))
    _plugins()


def techniques(stage: str | None = None) -> dict[str, Technique[Any]]:
    """Every technique (of one stage: prune, distill or quantize), by name."""
    _discover()
    return {n: t for n, t in sorted(_CATALOG.items()) if stage is None or t.config.stage == stage}


def config_class(name: str, stage: str | None = None) -> type[TechniqueConfig]:
    """The config class of technique `name`, or an error that lists the valid names."""
    table = techniques(stage)
    if name not in table:
        close = difflib.get_close_matches(str(name), list(table), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UnknownTechnique(f"unknown technique {name!r}; {hint}valid: {', '.join(table)}")
    return table[name].config


def make_config(data: dict[str, Any], stage: str | None = None) -> TechniqueConfig:
    """Build a technique config from a dict with a `method` key."""
    return config_class(str(data.get("method")), stage).model_validate(data)


@overload
def technique_of(cfg: StepConfig, stage: Literal["prune"]) -> Technique[PruneFn]: ...
@overload
def technique_of(cfg: StepConfig, stage: Literal["distill"]) -> Technique[DistillFn]: ...
@overload
def technique_of(cfg: StepConfig, stage: Literal["quantize"]) -> Technique[QuantizeFn]: ...
def technique_of(cfg: StepConfig, stage: str) -> Technique[Any]:
    """The technique that owns `cfg`; a config no technique of `stage` owns is an error, never a fallback."""
    found = techniques(stage).get(str(getattr(cfg, "method", "")))
    if found is None or type(cfg) is not found.config:
        raise UnknownTechnique(f"{type(cfg).__name__} is not a {stage} technique of the catalog")
    return found
