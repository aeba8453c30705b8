"""The typed manifest: a run's manifest round-trips unchanged, old ones load, bad ones give one line."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from slimline.pipelines.errors import FatalInputError
from slimline.pipelines.manifest import Manifest
from slimline.pipelines.run.records import RunStatus, Status

ROOT = Path(__file__).resolve().parents[3]

METRICS = {
    "fidelity": 0.99997,
    "flops": 8388608,  # ints stay ints
    "latency_ci_ms": [0.131, 0.142],
    "latency_p50_ms": 0.1336,
    "neighbour_agreement": 0.9875,
    "params": 997024,
    "size_mb": 1.2,
    "speedup_vs_baseline": 0.92,
}
# What `run()` returns (statuses as enums) once publish added `registered`, `gate` and `registry`.
RUN = {
    "run_id": "tiny-20261206T073611Z-bc080f",
    "spec_hash": "bc080fb3378aa52d",
    "status": RunStatus.PARTIAL,
    "started": "2026-12-06T07:36:11.257978+00:00",
    "finished": "2026-12-06T07:36:15.823408+00:00",
    "interrupted": False,
    "environment": {
        "python": "3.11.7",
        "torch": "2.13.0+cpu",
        "transformers": "5.25.0",
        "onnxruntime": "1.31.1",
        "ray": None,
        "mlflow": "3.17.2",
        "slimline": "0.1.0",
        "cpu_model": "AMD EPYC",
        "cpus": 2,
        "cpu_flags": "fma avx2",
        "providers": ["CPUExecutionProvider"],
        "gpus": 0,
        "executor": {"kind": "local", "workers": 1, "timing_node": "vm", "timing_cpus": 2, "address": None},
        "threads": {"per_task": 1, "latency": "every CPU of the node"},
    },
    "baseline": {**METRICS, "variant": "v-base", "onnx_vs_torch_fidelity": 0.9999999999998882},
    "variants": [
        {
            "id": "v-base",
            "label": "none × none",
            "pruning": None,
            "quantization": None,
            "distillation": None,
            "status": Status.CACHED,
            "reason": None,
            "metrics": METRICS,
            "onnx": "/a/stages/optimize-ec46a20386b2/model.onnx",
            "stages": ["load-451462b2796b", "export-9b995dfebdd8"],
        },
        {
            "id": "v-kd",
            "label": "heads(amount=0.5) + distill × none",
            "pruning": {"method": "heads", "amount": 0.5},
            "quantization": None,
            "distillation": {"config": {"steps": 20}, "loss_curve": [1.5, 0.5], "device": "cpu"},
            "status": Status.SUCCEEDED,
            "reason": None,
            "metrics": {**METRICS, "kl_divergence": float("nan")},
            "onnx": "/a/stages/quantize-1/model.onnx",
            "stages": ["load-451462b2796b", "prune-1", "distill-1"],
            "sensitivity": [{"node": "MatMul_1", "fidelity": 0.9}],  # a key the contract does not name
            "excluded": ["MatMul_1"],
        },
        {
            "id": "v-fp16",
            "label": "none × fp16",
            "pruning": None,
            "quantization": {"method": "fp16"},
            "distillation": None,
            "status": Status.SKIPPED,
            "reason": "fp16 needs a GPU task",
            "metrics": {},
            "onnx": None,
            "stages": [],
        },
        {"id": "v-bad", "status": "failed", "reason": "boom", "metrics": {}, "stages": []},
    ],
    "selected": ["v-kd"],
    "rejected": {"v-fp16": "skipped: fp16 needs a GPU task", "v-bad": "failed: boom"},
    "ties": {},
    "champion": {
        "version": "1",
        "variant": "v-old",
        "graph": "/a/champion/model.onnx",
        "metrics": {"latency_p50_ms": 0.2},
        "error": None,
        "ratios": {"v-kd": [0.9, 0.85, 0.95]},
    },
    "registered": [{"name": "tiny", "version": "2", "variant": "v-kd", "aliases": ["champion"]}],
    "gate": {
        "alias": "champion",
        "candidate": "2",
        "previous": "1",
        "moved": True,
        "reason": "faster",
        "ratio": None,
    },
    "registry": "sqlite:////tmp/x/slimline.db",
    "tick_id": None,
    "stages_per_node": {"abc": 3},
    "submission_id": None,
    "base_model_digest": "caa887c4f81cb8fe",
    "search": {"sampler": "tpe", "scheduler": "asha", "trials": [{"trial": "t1", "point": {"amount": 0.5}}]},
}


def _same(a: object, b: object) -> bool:
    """Equal as JSON (NaN included, which never equals itself)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_a_run_manifest_round_trips_unchanged() -> None:
    m = Manifest.model_validate(copy.deepcopy(RUN))
    assert m.schema_version == 1 and m.variants[1].status == Status.SUCCEEDED
    assert m.variants[1].model_extra == {
        "sensitivity": [{"node": "MatMul_1", "fidelity": 0.9}],
        "excluded": ["MatMul_1"],
    }
    out = m.to_json()
    assert _same(out, {**RUN, "schema_version": 1})
    assert isinstance(out["variants"][0]["metrics"]["flops"], int)
    assert _same(Manifest.model_validate(out).to_json(), out)


def test_an_old_manifest_without_schema_version_or_stage_lists_loads(tmp_path: Path) -> None:
    old = {
        k: v
        for k, v in copy.deepcopy(RUN).items()
        if k not in ("gate", "registry", "search", "base_model_digest")
    }
    for row in old["variants"]:
        del row["stages"]
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(old))
    m = Manifest.load(path)
    assert m.schema_version == 1 and m.gate is None and m.variants[0].stages is None
    # Defaults are not written back: a reader of the dict still sees what the file held.
    assert "stages" not in m.to_json()["variants"][0] and "gate" not in m.to_json()


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({**RUN, "status": "done"}, "manifest.json: not a slimline manifest: status: Input should be"),
        (
            {k: v for k, v in RUN.items() if k != "variants"},
            "not a slimline manifest: variants: Field required",
        ),
        (
            {**RUN, "variants": [{"id": "v", "status": "failed", "metrics": {"fidelity": "high"}}]},
            "variants.0.metrics",
        ),
        ({**RUN, "schema_version": 2}, "schema_version: Input should be less than or equal to 1"),
        ([1, 2], "<root>: expected a JSON object"),
        ("{not json", "not a slimline manifest: Expecting property name"),
    ],
)
def test_a_malformed_manifest_gives_one_line_naming_the_field(
    tmp_path: Path, body: object, says: str
) -> None:
    path = tmp_path / "manifest.json"
    path.write_text(body if isinstance(body, str) else json.dumps(body, default=str))
    with pytest.raises(FatalInputError) as exc:
        Manifest.load(path)
    line = str(exc.value)
    assert "\n" not in line and line.startswith(str(path)) and says in line, line


def test_the_published_json_schema_is_current() -> None:
    committed = json.loads((ROOT / "docs" / "manifest.schema.json").read_text())
    assert committed == Manifest.model_json_schema(), (
        "regenerate docs/manifest.schema.json from Manifest.model_json_schema() (json.dumps, indent=2)"
    )
