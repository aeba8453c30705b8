"""A whole sweep on a tiny model with the in-process executor: statuses, metrics, cache."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml


@pytest.fixture(scope="module")
def spec_file(tiny_model, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("run")
    spec = {
        "version": 1,
        "name": "tiny",
        "model": {"source": str(tiny_model("bert")), "task": "feature-extraction"},
        "data": {
            "eval": {"builtin": "corpus", "samples": 24},
            "calibration": {"samples": 8},
            "max_length": 32,
        },
        "variants": {
            "pruning": ["none", {"method": "heads", "amount": 0.5}],
            "quantization": ["none", {"method": "dynamic-int8", "per_channel": True}, {"method": "fp16"}],
        },
        "evaluate": {"latency": {"batch_size": 1, "sequence_length": 16, "warmup": 1, "repeats": 5}},
        "select": {"constraints": {"fidelity": {"min": 0.5}}, "top_k": 2},
        "artifacts": str(d / "artifacts"),
    }
    path = d / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _slimline(*args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("slimline")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, check=False, timeout=600)


def test_run_then_rerun_is_fully_cached(spec_file: Path) -> None:
    first = _slimline("run", str(spec_file), "--json")
    assert first.returncode == 0, first.stderr[-2000:]
    m = json.loads(first.stdout)
    by = {v["label"]: v for v in m["variants"]}
    assert len(by) == 6
    assert by["none × none"]["status"] == "succeeded"
    assert by["none × fp16"]["status"] == "skipped" and "GPU" in by["none × fp16"]["reason"]
    pruned = by["heads(amount=0.5) × dynamic-int8(per_channel=True)"]
    assert pruned["status"] == "succeeded"
    mets = pruned["metrics"]
    assert 0 < mets["fidelity"] <= 1 and mets["latency_p50_ms"] > 0 and mets["size_mb"] > 0
    assert mets["flops"] < by["none × none"]["metrics"]["flops"]
    assert mets["speedup_vs_baseline"] == pytest.approx(
        m["baseline"]["latency_p50_ms"] / mets["latency_p50_ms"]
    )
    assert m["baseline"]["onnx_vs_torch_fidelity"] > 0.9999
    assert 1 <= len(m["selected"]) <= 2
    assert set(m["rejected"]) | set(m["selected"]) == {
        v["id"] for v in m["variants"] if v["label"] != "none × none"
    }
    manifest = Path(yaml.safe_load(spec_file.read_text())["artifacts"]) / m["run_id"] / "manifest.json"
    assert json.loads(manifest.read_text())["run_id"] == m["run_id"]

    second = json.loads(_slimline("run", str(spec_file), "--json").stdout)
    assert {v["status"] for v in second["variants"]} == {"cached", "skipped"}


def test_validate_and_plan_cli(spec_file: Path, tmp_path: Path) -> None:
    ok = _slimline("validate", str(spec_file))
    assert ok.returncode == 0 and "valid" in ok.stdout
    out = _slimline("plan", str(spec_file))
    assert out.returncode == 0 and "skipped" in out.stdout and "export" in out.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nname: x\nmodel: {source: x, task: nope}\n")
    res = _slimline("validate", str(bad))
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "model.task" in res.stderr and str(bad) in res.stderr


def test_missing_model_is_exit_two_with_one_line(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "name": "x",
                "model": {"source": "./does/not/exist"},
                "artifacts": str(tmp_path / "a"),
            }
        )
    )
    res = _slimline("run", str(spec))
    assert res.returncode == 2
    line = res.stderr.strip()
    assert "\n" not in line and str(spec) in line and "model.source" in line and "no such folder" in line
