"""Sweeps on a real embedded Ray (num_cpus=2) with tiny BERT-like and GPT-2 models."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from slimline.cluster.ray_executor import InfeasibleResources, RayExecutor
from slimline.pipelines.run.run import run
from slimline.pipelines.spec.spec import Spec

OK = {"succeeded", "cached"}


@pytest.fixture(scope="module")
def ray_ex():
    with RayExecutor(num_cpus=2) as ex:
        yield ex


def _by_label(manifest: dict) -> dict[str, dict]:
    return {v["label"]: v for v in manifest["variants"]}


def _stage_pids(root: Path) -> set[int]:
    import json

    return {json.loads(p.read_text())["pid"] for p in (root / "stages").glob("*.json")}


def test_bert_sweep_statuses_failure_and_cache(ray_ex, tiny_model, tiny_spec, tmp_path) -> None:
    impossible = {"atol": 1e-12, "min_cosine": 1.0}  # ORT never matches torch to the last bit
    variants = {
        "pruning": [
            "none",
            {"method": "heads", "amount": 0.5},
            {"method": "magnitude", "sparsity": 0.5, "export": impossible},
        ],
        "quantization": [
            "none",
            {"method": "dynamic-int8", "per_channel": True},
            {"method": "static-int8"},
            {"method": "fp16"},
        ],
    }
    spec = Spec.model_validate(
        tiny_spec(tiny_model("bert"), "feature-extraction", tmp_path / "a", variants=variants)
    )
    m = run(spec, ray_ex)
    by = _by_label(m)
    assert len(by) == 12
    assert m["environment"]["executor"]["kind"] == "ray" and m["environment"]["executor"]["workers"] == 2
    for label, v in by.items():
        if label.endswith("fp16"):
            assert v["status"] == "skipped" and "GPU" in v["reason"]
        elif label.startswith("magnitude"):
            assert v["status"] == "failed" and "parity breach" in v["reason"], v
            assert v["metrics"] == {}
        else:
            assert v["status"] == "succeeded", v
            assert 0 < v["metrics"]["fidelity"] <= 1.0 + 1e-6
            assert v["metrics"]["latency_p50_ms"] > 0 and v["metrics"]["speedup_vs_baseline"] > 0
    assert m["status"] == "partial"  # some variants failed, the baseline and others did not
    assert set(m["selected"]) <= {v["id"] for v in by.values() if v["status"] == "succeeded"}
    assert all(vid in m["rejected"] for vid in (v["id"] for v in by.values() if v["status"] == "failed"))
    # The stages really ran in Ray workers, more than one of them, and not in this process.
    pids = _stage_pids(tmp_path / "a")
    assert os.getpid() not in pids and len(pids) >= 2

    again = run(spec, ray_ex)
    for label, v in _by_label(again).items():
        expected = by[label]["status"]
        assert v["status"] == ("cached" if expected == "succeeded" else expected), label
    # A rerun reuses every finished stage and its numbers; latency alone is timed again.
    for label, v in _by_label(again).items():
        for key in ("fidelity", "size_mb", "flops"):
            assert v["metrics"].get(key) == by[label]["metrics"].get(key), (label, key)
    assert again["baseline"]["variant"] == m["baseline"]["variant"]


def test_gpt2_sweep_on_ray(ray_ex, tiny_model, tiny_spec, tmp_path) -> None:
    variants = {
        "pruning": ["none", {"method": "heads", "amount": 0.5}],
        "quantization": [
            "none",
            {"method": "dynamic-int8"},
            {"method": "int4-weight-only", "block_size": 16},
        ],
    }
    spec = Spec.model_validate(
        tiny_spec(
            tiny_model("gpt2"),
            "causal-lm",
            tmp_path / "a",
            variants=variants,
            select={"constraints": {"fidelity": {"min": 0.0}}, "objectives": ["size_mb"], "top_k": 1},
        )
    )
    m = run(spec, ray_ex)
    assert m["status"] == "succeeded"
    for v in m["variants"]:
        assert v["status"] == "succeeded", v
        assert v["metrics"]["perplexity"] > 1 and 0 <= v["metrics"]["fidelity"] <= 1
    by = _by_label(m)
    assert by["none × none"]["metrics"]["fidelity"] == pytest.approx(1.0)
    # size_mb is the only objective: the smallest variant wins.
    smallest = min(m["variants"], key=lambda v: v["metrics"]["size_mb"])
    assert m["selected"] == [smallest["id"]]


def test_gpus_asked_of_a_cluster_without_gpus_is_refused(ray_ex) -> None:
    with pytest.raises(InfeasibleResources, match=r"resources\.gpus_per_task.*no GPUs"):
        RayExecutor(gpus_per_task=1, warm=False)
    with pytest.raises(InfeasibleResources, match="largest node: 2 CPUs"):
        RayExecutor(cpus_per_task=3, warm=False)


def test_only_system_failures_are_retried(ray_ex, tmp_path) -> None:
    calls = tmp_path / "calls"
    calls.mkdir()

    def dies_once(stage, inputs, ctx):  # a worker that dies the first time: a system failure
        (calls / f"{stage['id']}-{len(list(calls.iterdir()))}").touch()
        if len(list(calls.glob(f"{stage['id']}-*"))) == 1:
            os._exit(1)
        return {"status": "succeeded", "kind": stage["kind"]}

    def raises(stage, inputs, ctx):  # a bug in a stage: deterministic, never retried
        (calls / f"{stage['id']}-{len(list(calls.iterdir()))}").touch()
        raise ValueError("boom")

    stage = {"id": "crash", "kind": "export", "parent": None}
    ex = RayExecutor(stage_fn=dies_once, warm=False)
    handle = ex.submit(stage, {}, None)
    assert ex.wait([handle])[1]["status"] == "succeeded"
    assert len(list(calls.glob("crash-*"))) == 2

    ex = RayExecutor(stage_fn=raises, warm=False)
    handle = ex.submit({**stage, "id": "bug"}, {}, None)
    rec = ex.wait([handle])[1]
    assert rec["status"] == "failed" and "ValueError: boom" in rec["reason"]
    assert len(list(calls.glob("bug-*"))) == 1


def test_cancel_on_a_joined_cluster_stops_the_task(ray_ex, tmp_path) -> None:
    # An executor that joined a Ray it did not start (as on a shared cluster) must cancel what it
    # submitted, since no ray.shutdown will; an owning one leaves that to its shutdown.
    marker = tmp_path / "finished"

    def sleeps(stage, inputs, ctx):
        time.sleep(60)
        marker.touch()
        return {"status": "succeeded", "kind": stage["kind"]}

    ex = RayExecutor(stage_fn=sleeps, warm=False)
    assert not ex._owns
    handle = ex.submit({"id": "slow", "kind": "distill", "parent": None}, {}, None)
    time.sleep(2)  # let it start running on a worker
    start = time.monotonic()
    ex.cancel([handle])
    rec = ex.wait([handle])[1]
    assert rec == {"status": "failed", "kind": "distill", "reason": "interrupted"}
    assert time.monotonic() - start < 30 and not marker.exists()
