"""Each task's metrics through a real sweep: rated pairs, labels, and KL for causal LMs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from slimline.pipelines.run.local import LocalExecutor
from slimline.pipelines.run.run import run
from slimline.pipelines.spec.spec import load_spec

INT8 = {"pruning": ["none"], "quantization": ["none", {"method": "dynamic-int8", "per_channel": True}]}


def _sweep(tmp_path: Path, spec: dict) -> tuple[dict, dict]:
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    manifest = run(load_spec(tmp_path / "spec.yaml"), LocalExecutor())
    rows = {v["label"]: v for v in manifest["variants"]}
    base, int8 = rows["none × none"], rows["none × dynamic-int8(per_channel=True)"]
    assert base["status"] == int8["status"] == "succeeded", (base.get("reason"), int8.get("reason"))
    return base["metrics"], int8["metrics"]


def _deltas_are_against_the_baseline(name: str, base: dict, int8: dict) -> None:
    assert base[f"{name}_delta"] == pytest.approx(0.0, abs=1e-9)  # the fp32 graph is the reference
    assert int8[f"{name}_delta"] == pytest.approx(int8[name] - base[name])


def test_rated_pairs_give_sts_spearman(tiny_model, tiny_spec, texts, tmp_path) -> None:
    pairs = tmp_path / "pairs.jsonl"
    rows = [{"a": texts[i], "b": texts[i + 1], "score": (i * 7) % 5} for i in range(0, 40, 2)]
    pairs.write_text("\n".join(json.dumps(r) for r in rows))
    eval_ = {"path": str(pairs), "text_field": "a", "pair_field": "b", "score_field": "score"}
    spec = tiny_spec(tiny_model("bert"), "feature-extraction", tmp_path / "a", variants=INT8)
    spec["data"] = {"eval": eval_, "calibration": {"samples": 4}, "max_length": 32}
    base, int8 = _sweep(tmp_path, spec)
    assert -1 <= base["sts_spearman"] <= 1 and -1 <= int8["sts_spearman"] <= 1
    _deltas_are_against_the_baseline("sts_spearman", base, int8)
    assert "neighbour_agreement" in int8 and "accuracy" not in int8


def test_labels_give_accuracy(tiny_model, tiny_spec, texts, tmp_path) -> None:
    data = tmp_path / "labels.csv"
    rows = "".join(f'"{t}",{"pos" if i % 3 else "neg"}\n' for i, t in enumerate(texts[:40]))
    data.write_text("text,y\n" + rows)
    spec = tiny_spec(tiny_model("bert", "text-classification"), "text-classification", tmp_path / "a")
    spec["variants"] = INT8
    spec["data"] = {"eval": {"path": str(data), "label_field": "y"}, "calibration": {"samples": 8}}
    base, int8 = _sweep(tmp_path, spec)
    assert 0 <= base["accuracy"] <= 1 and base["accuracy"] * 32 == pytest.approx(round(base["accuracy"] * 32))
    _deltas_are_against_the_baseline("accuracy", base, int8)
    assert int8["flip_rate"] == pytest.approx(1 - int8["fidelity"])


def test_causal_lm_gives_kl_top1_and_perplexity(tiny_model, tiny_spec, tmp_path) -> None:
    spec = tiny_spec(tiny_model("gpt2"), "causal-lm", tmp_path / "a", variants=INT8)
    base, int8 = _sweep(tmp_path, spec)
    assert base["kl_divergence"] == pytest.approx(0.0, abs=1e-6) and base["top1_agreement"] == 1.0
    assert int8["kl_divergence"] > 0 and int8["top1_agreement"] == int8["fidelity"]
    _deltas_are_against_the_baseline("perplexity", base, int8)
