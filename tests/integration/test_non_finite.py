"""A model that computes NaN fails its variant with a reason; it is never selected or registered."""

from __future__ import annotations

import sys
from typing import ClassVar, Literal

import pytest
import torch
import yaml

from slimline.pipelines.run.local import LocalExecutor
from slimline.pipelines.run.run import run
from slimline.pipelines.spec.spec import load_spec
from slimline.tasks import catalog
from slimline.tasks.base import Record, TechniqueConfig
from slimline.tasks.techniques import register_technique


class PoisonConfig(TechniqueConfig):
    """Test-only pruning: one NaN in the first layer's query weight."""

    stage: ClassVar = "prune"
    method: Literal["test-poison"] = "test-poison"


@register_technique(PoisonConfig)
def apply(cfg: PoisonConfig, model: torch.nn.Module, batches: object = None) -> Record:
    with torch.no_grad():
        model.encoder.layer[0].attention.self.query.weight[0, 0] = float("nan")
    return {}


@pytest.fixture()
def poison() -> object:
    yield catalog.register(sys.modules[__name__])
    catalog._CATALOG.pop("test-poison", None)  # leave the catalog as the other tests know it


def test_nan_outputs_fail_the_variant_and_are_never_selected(poison, tiny_model, tiny_spec, tmp_path) -> None:
    data = tiny_spec(
        tiny_model("bert"),
        "feature-extraction",
        tmp_path / "artifacts",
        variants={"pruning": ["none", "test-poison"], "quantization": ["none"]},
    )
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(data))
    manifest = run(load_spec(tmp_path / "spec.yaml"), LocalExecutor())
    rows = {v["label"]: v for v in manifest["variants"]}
    bad = rows["test-poison × none"]
    assert bad["status"] == "failed" and "non-finite outputs" in bad["reason"]
    assert bad["id"] not in manifest["selected"] and bad["id"] in manifest["rejected"]
    assert rows["none × none"]["status"] == "succeeded"
