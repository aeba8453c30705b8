"""A technique added in one file: registered, validated by the spec, planned and run, untouched code.

This file is the whole technique: a config with its capabilities and an `apply`. Nothing in the
spec, the planner, the stage runner or the executor knows its name.
"""

from __future__ import annotations

import json
import sys
from typing import ClassVar, Literal

import pytest
import torch
import yaml
from pydantic import Field

from slimline.pipelines.plan.plan import build_plan
from slimline.pipelines.run.local import LocalExecutor
from slimline.pipelines.run.publish import publish
from slimline.pipelines.run.run import run
from slimline.pipelines.spec.spec import load_spec
from slimline.registry.memory import InMemoryRegistry
from slimline.tasks import catalog
from slimline.tasks.base import Record, TechniqueConfig
from slimline.tasks.families import block_linears, detect
from slimline.tasks.techniques import register_technique


class ShrinkConfig(TechniqueConfig):
    """Toy pruning: scale every block weight by `factor` (changes outputs, not shapes)."""

    stage: ClassVar = "prune"
    method: Literal["toy-shrink"] = "toy-shrink"
    factor: float = Field(default=0.9, gt=0, le=1)


@register_technique(ShrinkConfig)
def apply(cfg: ShrinkConfig, model: torch.nn.Module, batches: object = None) -> Record:
    mods = [m for _, m in block_linears(model, detect(model))]
    with torch.no_grad():
        for m in mods:
            m.weight.mul_(cfg.factor)
    return {"scaled_matrices": len(mods)}


@pytest.fixture()
def toy() -> object:
    technique = catalog.register(sys.modules[__name__])
    yield technique
    catalog._CATALOG.pop("toy-shrink", None)  # leave the catalog as the other tests know it


def _spec(tmp_path, tiny_spec, model, **variants: object):
    data = tiny_spec(model, "feature-extraction", tmp_path / "artifacts", variants=variants)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_spec(path)


def test_toy_technique_is_validated_planned_and_run(toy, tiny_model, tiny_spec, tmp_path) -> None:
    assert catalog.config_class("toy-shrink", "prune") is ShrinkConfig
    spec = _spec(
        tmp_path, tiny_spec, tiny_model("bert"), pruning=[{"method": "toy-shrink", "factor": [0.5, 0.8]}]
    )
    plan = build_plan(spec, "d")
    prunes = [s for s in plan.stages.values() if s.kind == "prune"]
    assert sorted(s.config["factor"] for s in prunes) == [0.5, 0.8]

    manifest = run(spec, LocalExecutor(reraise=True))
    rows = {v["label"]: v for v in manifest["variants"]}
    assert set(rows) == {"none × none", "toy-shrink(factor=0.5) × none", "toy-shrink(factor=0.8) × none"}
    assert all(v["status"] == "succeeded" for v in rows.values()), rows
    # Shrinking the weights changes the embeddings, and shrinking them more changes them more.
    f50 = rows["toy-shrink(factor=0.5) × none"]["metrics"]["fidelity"]
    f80 = rows["toy-shrink(factor=0.8) × none"]["metrics"]["fidelity"]
    assert f50 < f80 < 1.0
    # The technique's own record fields land in the stage record, as for a built-in technique.
    records = [json.loads(f.read_text()) for f in (tmp_path / "artifacts" / "stages").glob("prune-*.json")]
    assert sorted(r["config"]["factor"] for r in records) == [0.5, 0.8]
    assert all(r["scaled_matrices"] == 12 for r in records)  # 2 layers x 6 matrices

    registry = InMemoryRegistry()
    published = publish(registry, manifest, spec, tmp_path / "artifacts" / manifest["run_id"])
    assert published["registered"] and registry.alias_holder("tiny", "champion") is not None


def test_capabilities_reach_the_plan_without_naming_the_technique(
    toy, tiny_model, tiny_spec, tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(ShrinkConfig, "needs_gpu", "toy-shrink needs a GPU to shrink")
    monkeypatch.setattr(ShrinkConfig, "changes_shapes", True)
    spec = _spec(
        tmp_path,
        tiny_spec,
        tiny_model("bert"),
        pruning=[{"method": "toy-shrink"}],
        distillation={"enabled": True, "steps": 5},
    )
    plan = build_plan(spec, "d", train_digest="t")
    toy_rows = [v for v in plan.variants if v.pruning and v.pruning["method"] == "toy-shrink"]
    assert toy_rows and all(
        v.status == "skipped" and v.reason == "toy-shrink needs a GPU to shrink" for v in toy_rows
    )
    assert all(v.distillation is not None and "+kd" in v.label for v in toy_rows)
    # A pruning that cannot run here adds no stage at all: nothing is computed to be thrown away.
    assert all(v.stages == [] for v in toy_rows)
    assert not [s for s in plan.stages.values() if s.config.get("method") == "toy-shrink"]
