"""The technique catalog: one line per technique, name -> frozen config class."""

from __future__ import annotations

from typing import Any

from tasks.base import StepConfig, TaskError
from tasks.distill import DistillConfig
from tasks.export import ExportConfig
from tasks.load import LoadConfig
from tasks.optimize import OptimizeConfig
from tasks.profile import ProfileConfig
from tasks.prune import FFNConfig, HeadsConfig, MagnitudeConfig, StructuredConfig
from tasks.quantize import DynamicInt8Config, FP16Config, Int4Config, StaticInt8Config

PRUNING: dict[str, type[StepConfig]] = {
    "magnitude": MagnitudeConfig,
    "heads": HeadsConfig,
    "ffn": FFNConfig,
    "structured": StructuredConfig,
}
QUANTIZATION: dict[str, type[StepConfig]] = {
    "dynamic-int8": DynamicInt8Config,
    "static-int8": StaticInt8Config,
    "fp16": FP16Config,
    "int4-weight-only": Int4Config,
}
CATALOG: dict[str, type[StepConfig]] = {
    "load": LoadConfig,
    "export": ExportConfig,
    "optimize": OptimizeConfig,
    "profile": ProfileConfig,
    "distill": DistillConfig,
    **PRUNING,
    **QUANTIZATION,
}


class UnknownTechnique(TaskError):
    """A technique name that is not in the catalog."""


def config_class(name: str, among: dict[str, type[StepConfig]] | None = None) -> type[StepConfig]:
    """The config class of technique `name`, or an error that lists the valid names."""
    table = CATALOG if among is None else among
    if name not in table:
        raise UnknownTechnique(f"unknown technique {name!r}; valid: {', '.join(sorted(table))}")
    return table[name]


def make_config(data: dict[str, Any], among: dict[str, type[StepConfig]] | None = None) -> StepConfig:
    """Build a technique config from a dict with a `method` key."""
    return config_class(str(data.get("method")), among).model_validate(data)
