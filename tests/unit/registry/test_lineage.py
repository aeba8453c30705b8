"""What a registered version carries: lineage tags, and metrics that read back as they went in."""

from __future__ import annotations

import json

from slimline.registry.lineage import METRICS_TAG, TAG, metrics_of, pip_requirements, version_tags

ROW = {
    "id": "v-1",
    "label": "heads(amount=0.5) × dynamic-int8",
    "pruning": {"method": "heads", "amount": 0.5},
    "quantization": {"method": "dynamic-int8"},
    "distillation": {"config": {"steps": 5}, "loss_curve": [[1, 2.0]], "loss_end": 1.0},
    "metrics": {"fidelity": 0.97, "latency_p50_ms": 3.5, "latency_ci_ms": [3.0, 4.0], "params": 10},
    "onnx": "/a/model.onnx",
}
MANIFEST = {
    "run_id": "r",
    "spec_hash": "h",
    "base_model_digest": "d",
    "environment": {"torch": "2", "cpu_flags": "avx2", "providers": ["CPUExecutionProvider"]},
}


def test_version_tags_carry_lineage_and_numeric_metrics() -> None:
    tags = version_tags(MANIFEST, ROW)
    assert tags[f"{TAG}variant_id"] == "v-1" and tags[f"{TAG}base_model_digest"] == "d"
    assert json.loads(tags[f"{TAG}pruning"]) == ROW["pruning"]
    # The loss curve is a metric of the run, not a tag of the version.
    assert "loss_curve" not in json.loads(tags[f"{TAG}distillation"])
    assert metrics_of(tags) == {"fidelity": 0.97, "latency_p50_ms": 3.5, "params": 10.0}
    assert all(isinstance(v, str) for v in tags.values()) and METRICS_TAG in tags


def test_pip_requirements_are_pinned() -> None:
    reqs = pip_requirements()
    assert reqs and all("==" in r for r in reqs) and any(r.startswith("onnx==") for r in reqs)
