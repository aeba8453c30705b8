"""Distillation inside a sweep: planned for structured prunings only, cached, in the manifest and MLflow."""

from __future__ import annotations

import json

import pytest
from mlflow import MlflowClient

from slimline.pipelines.run.local import LocalExecutor
from slimline.pipelines.run.publish import publish
from slimline.pipelines.run.run import prepare, run
from slimline.pipelines.spec.spec import Spec
from slimline.registry.adapter import MlflowRegistry

STRUCTURED = {"method": "structured", "heads": 0.5, "ffn": 0.5}


def _spec(tiny_model, tiny_spec, root, enabled: bool) -> Spec:
    return Spec.model_validate(
        tiny_spec(
            tiny_model("bert", init_range=0.2),
            "feature-extraction",
            root / "artifacts",
            data={
                "eval": {"builtin": "corpus", "samples": 48},
                "calibration": {"samples": 8},
                "train": {"builtin": "python-docs", "samples": 400},
                "max_length": 32,
            },
            variants={
                "pruning": ["none", STRUCTURED, {"method": "magnitude", "sparsity": 0.5}],
                "quantization": ["none"],
                "distillation": {"enabled": enabled, "steps": 40, "lr": 1e-3, "batch_size": 8},
            },
            # Smallest first: the structured variant (magnitude zeros keep the dense size).
            select={"constraints": {}, "objectives": ["size_mb"], "top_k": 1},
            registry={"model_name": "tiny-kd"},
        )
    )


def test_sweep_distils_structured_variants_and_logs_the_curve(tiny_model, tiny_spec, tmp_path) -> None:
    plain = run(_spec(tiny_model, tiny_spec, tmp_path, enabled=False), LocalExecutor())
    spec = _spec(tiny_model, tiny_spec, tmp_path, enabled=True)
    plan, ctx = prepare(spec, tmp_path / "artifacts" / "stages")
    distills = [s for s in plan.stages.values() if s.kind == "distill"]
    # One distill stage, after the structured prune, with the base model as its teacher.
    assert len(distills) == 1
    assert plan.stages[distills[0].parent].config["method"] == "structured"
    assert distills[0].needs == [next(s.id for s in plan.stages.values() if s.kind == "load")]
    assert ctx.train_texts and not set(ctx.train_texts) & set(ctx.eval_texts)

    m = run(spec, LocalExecutor())
    by = {v["label"]: v for v in m["variants"]}
    kd = by["structured(heads=0.5, ffn=0.5) +kd × none"]
    assert kd["status"] == "succeeded", kd["reason"]
    assert kd["distillation"]["config"]["steps"] == 40
    assert kd["distillation"]["loss_end"] < kd["distillation"]["loss_start"]
    assert by["magnitude(sparsity=0.5) × none"]["distillation"] is None
    before = next(v for v in plain["variants"] if v["label"] == "structured(heads=0.5, ffn=0.5) × none")
    assert kd["metrics"]["fidelity"] > before["metrics"]["fidelity"]
    # Same FLOPs as the undistilled model: distillation changes weights, not shapes.
    assert kd["metrics"]["flops"] == before["metrics"]["flops"]

    again = run(spec, LocalExecutor())
    assert {v["status"] for v in again["variants"]} == {"cached"}
    assert next(v for v in again["variants"] if v["id"] == kd["id"])["distillation"] == kd["distillation"]

    store = f"sqlite:///{tmp_path / 'kd.db'}"
    out = publish(MlflowRegistry(store), m, spec, tmp_path / "artifacts" / m["run_id"])
    client = MlflowClient(tracking_uri=store)
    exp = client.get_experiment_by_name(spec.name).experiment_id
    child = client.search_runs([exp], filter_string=f"tags.`slimline.variant_id` = '{kd['id']}'")[0]
    history = client.get_metric_history(child.info.run_id, "distill_loss")
    assert [(h.step, h.value) for h in sorted(history, key=lambda h: h.step)] == [
        (int(s), pytest.approx(v)) for s, v in kd["distillation"]["loss_curve"]
    ]
    assert child.data.params["distillation.steps"] == "40"
    assert [r["variant"] for r in out["registered"]] == [kd["id"]]
    tags = client.get_model_version("tiny-kd", out["registered"][0]["version"]).tags
    lineage = json.loads(tags["slimline.distillation"])
    assert (
        lineage["loss_end"] == pytest.approx(kd["distillation"]["loss_end"]) and "loss_curve" not in lineage
    )
