"""The technique catalog: discovery, capabilities as data, JSON round trips, clear errors."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError
from slimline.tasks import catalog
from slimline.tasks.base import StepConfig, TechniqueConfig
from slimline.tasks.evaluate import LatencyConfig
from slimline.tasks.export import ExportConfig
from slimline.tasks.load import LoadConfig
from slimline.tasks.optimize import OptimizeConfig
from slimline.tasks.profile import ProfileConfig

EXAMPLES = {
    "heads": {"amount": 0.5},
    "ffn": {"amount": 0.25},
    "structured": {"heads": 0.5, "ffn": 0.25},
    "layers": {"amount": 0.25},
}
PACKAGE = {"prune": "pruning", "distill": "distillation", "quantize": "quantization"}
STEPS: list[StepConfig] = [
    LoadConfig(source="x"),
    ExportConfig(),
    OptimizeConfig(),
    ProfileConfig(),
    LatencyConfig(),
]


def test_every_technique_module_is_discovered_with_its_stage() -> None:
    by_stage = {s: sorted(catalog.techniques(s)) for s in ("prune", "distill", "quantize")}
    assert by_stage == {
        "prune": ["ffn", "heads", "layers", "magnitude", "structured"],
        "distill": ["distill"],
        "quantize": ["dynamic-int8", "fp16", "int4-weight-only", "int8-weight-only", "static-int8"],
    }
    for name, t in catalog.techniques().items():
        assert issubclass(t.config, TechniqueConfig) and t.config.model_fields["method"].default == name
        assert t.config.__module__.startswith(f"slimline.tasks.{PACKAGE[t.config.stage]}.")


def test_capabilities_are_data_on_the_config_class() -> None:
    t = catalog.techniques()
    assert {n for n, x in t.items() if x.config.changes_shapes} == {"heads", "ffn", "structured", "layers"}
    assert {n for n, x in t.items() if x.config.needs_gpu} == {"fp16"}
    assert "op_types" in t["static-int8"].config.list_fields
    assert "nodes_to_exclude" in t["dynamic-int8"].config.list_fields


@pytest.mark.parametrize("name", sorted(catalog.techniques()))
def test_every_technique_config_round_trips_through_json(name: str) -> None:
    cfg = catalog.config_class(name).model_validate({"method": name, **EXAMPLES.get(name, {})})
    again = catalog.make_config(json.loads(json.dumps(cfg.to_json())))
    assert again == cfg and again.digest() == cfg.digest()
    with pytest.raises(ValidationError, match="frozen"):
        cfg.method = "other"  # type: ignore[misc]


@pytest.mark.parametrize("cfg", STEPS, ids=lambda c: type(c).__name__)
def test_every_step_config_round_trips_through_json(cfg: StepConfig) -> None:
    again = type(cfg).model_validate(json.loads(json.dumps(cfg.to_json())))
    assert again == cfg and again.digest() == cfg.digest()


def test_unknown_technique_lists_the_valid_ones() -> None:
    with pytest.raises(
        catalog.UnknownTechnique,
        match="valid: dynamic-int8, fp16, int4-weight-only, int8-weight-only, static-int8",
    ):
        catalog.make_config({"method": "int3"}, "quantize")


def test_unknown_config_field_is_refused() -> None:
    with pytest.raises(ValidationError, match="extra"):
        catalog.make_config({"method": "heads", "amount": 0.5, "amout": 1})


def test_a_module_without_config_or_apply_is_refused() -> None:
    import types

    with pytest.raises(TypeError, match="CONFIG"):
        catalog.register(types.ModuleType("not_a_technique"))
