"""The technique catalog: every module of tasks/pruning, tasks/quantization and tasks/distillation.

A technique module holds `CONFIG`, a TechniqueConfig subclass whose `method` default is the
technique's name, and `apply`. Adding a technique is adding such a module: the catalog finds
it, and the spec, the planner and the executors learn what they need from the config's
capabilities. `register` adds a module from elsewhere (a plug-in, or a test's toy technique).
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from slimline.tasks.base import StepConfig, TaskError, TechniqueConfig

PACKAGES = ("pruning", "quantization", "distillation")


class UnknownTechnique(TaskError):
    """A technique name that is not in the catalog, or a config that no technique owns."""


@dataclass(frozen=True)
class Technique:
    """One catalog entry: its name, config class and `apply`."""

    name: str
    config: type[TechniqueConfig]
    apply: Callable[..., Any]
    doc: str


_CATALOG: dict[str, Technique] = {}


def register(module: ModuleType) -> Technique:
    """Add a technique module to the catalog (idempotent for the same module)."""
    _discover()  # built-ins first, so that a plug-in never hides them or takes their names
    return _add(module)


def _add(module: ModuleType) -> Technique:
    cfg = getattr(module, "CONFIG", None)
    fn = getattr(module, "apply", None)
    if not (isinstance(cfg, type) and issubclass(cfg, TechniqueConfig)) or not callable(fn):
        raise TypeError(f"{module.__name__}: a technique module needs CONFIG (a TechniqueConfig) and apply()")
    name = str(cfg.model_fields["method"].default)
    known = _CATALOG.get(name)
    if known is not None and known.config is not cfg:
        raise TypeError(f"{module.__name__}: technique {name!r} is already {known.config.__module__}")
    doc = (cfg.__doc__ or module.__doc__ or "").strip().splitlines()[0]
    _CATALOG[name] = Technique(name, cfg, fn, doc)
    return _CATALOG[name]


@functools.cache  # once per process; a module that fails to import is tried again next time
def _discover() -> None:
    for pkg_name in PACKAGES:
        pkg = importlib.import_module(f"{__package__}.{pkg_name}")
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_"):
                _add(importlib.import_module(f"{pkg.__name__}.{info.name}"))


def techniques(stage: str | None = None) -> dict[str, Technique]:
    """Every technique (of one stage: prune, distill or quantize), by name."""
    _discover()
    return {n: t for n, t in sorted(_CATALOG.items()) if stage is None or t.config.stage == stage}


def config_class(name: str, stage: str | None = None) -> type[TechniqueConfig]:
    """The config class of technique `name`, or an error that lists the valid names."""
    table = techniques(stage)
    if name not in table:
        raise UnknownTechnique(f"unknown technique {name!r}; valid: {', '.join(table)}")
    return table[name].config


def make_config(data: dict[str, Any], stage: str | None = None) -> TechniqueConfig:
    """Build a technique config from a dict with a `method` key."""
    return config_class(str(data.get("method")), stage).model_validate(data)


def technique_of(cfg: StepConfig, stage: str) -> Technique:
    """The technique that owns `cfg`; a config no technique of `stage` owns is an error, never a fallback."""
    found = techniques(stage).get(str(getattr(cfg, "method", "")))
    if found is None or type(cfg) is not found.config:
        raise UnknownTechnique(f"{type(cfg).__name__} is not a {stage} technique of the catalog")
    return found
