"""Search on real Ray Tune with tiny models: asha and tpe through the CLI, shared stages computed
once by concurrent trials, and a distillation that resumes at the next rung from its checkpoint."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import yaml
from mlflow import MlflowClient

from slimline.pipelines.run.search import TrialSetup, run_trial
from slimline.pipelines.run.stage import Context, cached
from slimline.pipelines.spec.spec import Spec

HEADS = {"method": "heads", "amount": {"min": 0.25, "max": 0.75}}


def _search_spec(tiny_model: Any, tiny_spec: Any, root: Path, **search: Any) -> dict[str, Any]:
    return tiny_spec(
        tiny_model("bert", init_range=0.2),
        "feature-extraction",
        root / "artifacts",
        data={
            "eval": {"builtin": "corpus", "samples": 48},
            "calibration": {"samples": 8},
            "train": {"builtin": "python-docs", "samples": 64},
            "max_length": 32,
        },
        select={"constraints": {"fidelity": {"min": 0.9}}, "objectives": ["latency_p50_ms"], "top_k": 1},
        registry={"model_name": "tiny-search"},
        search={
            "space": {
                "pruning": ["none", HEADS],
                "quantization": ["none", "dynamic-int8"],
                "distillation": {"steps": 8, "batch_size": 4, "lr": 1e-3},
            },
            "seed": 0,
            **search,
        },
    )


def _run(slimline: Any, spec: dict[str, Any], path: Path, *args: str) -> dict[str, Any]:
    path.write_text(yaml.safe_dump(spec))
    res = slimline("run", str(path), "--json", *args)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout)


def _champion(manifest: dict[str, Any]) -> str:
    store = os.environ["MLFLOW_TRACKING_URI"]  # this test's own store (conftest)
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    return client.get_model_version_by_alias("tiny-search", "champion").tags["slimline.variant_id"]


def test_asha_stops_trials_early_and_registers_the_best(tiny_model, tiny_spec, slimline, tmp_path) -> None:
    rungs = [{"eval_samples": 16, "distill_fraction": 0.5}, {}]
    spec = _search_spec(tiny_model, tiny_spec, tmp_path, strategy="asha", trials=8, rungs=rungs)
    manifest = _run(slimline, spec, tmp_path / "spec.yaml")
    search = manifest["search"]
    assert search["strategy"] == "asha" and search["trials_started"] == 8
    stopped = [t for t in search["trials"] if t["status"] == "stopped"]
    assert stopped and all(t["stopped_at_rung"] == 0 and len(t["rungs"]) == 1 for t in stopped)
    finished = [t for t in search["trials"] if t["status"] == "finished"]
    assert finished and all([r["rung"] for r in t["rungs"]] == [0, 1] for t in finished)
    # Every stage was computed by one trial at most: the others found it in the shared cache.
    computed = [sid for t in search["trials"] for r in t["rungs"] for sid in r["computed"]]
    assert len(computed) == len(set(computed)) and any(r["cached"] for t in finished for r in t["rungs"])
    # The finalists went through the grid's latency phase and selection; the best is registered.
    finalists = {t["variant"] for t in finished}
    timed = {v["id"] for v in manifest["variants"] if "latency_p50_ms" in v["metrics"]}
    assert finalists <= timed and manifest["selected"] and _champion(manifest) == manifest["selected"][0]
    assert search["best_so_far"] and search["best_so_far"][0]["score"] > 0


def test_tpe_searches_through_the_cli_on_the_local_executor(
    tiny_model, tiny_spec, slimline, tmp_path
) -> None:
    spec = _search_spec(tiny_model, tiny_spec, tmp_path, strategy="tpe", trials=5)
    manifest = _run(slimline, spec, tmp_path / "spec.yaml", "--executor", "local")
    search = manifest["search"]
    assert search["strategy"] == "tpe" and search["trials_started"] == 5
    # Without multi-fidelity every trial is evaluated once, at the full (last) rung.
    assert all([r["rung"] for r in t["rungs"]] == [0] for t in search["trials"])
    assert search["trials_finished"] + search["trials_failed"] == 5 and search["trials_finished"] >= 4
    assert manifest["status"] in ("succeeded", "partial") and _champion(manifest) == manifest["selected"][0]


def _setup(tiny_model: Any, tiny_spec: Any, root: Path, rungs: list[dict[str, Any]]) -> TrialSetup:
    spec = Spec.model_validate(_search_spec(tiny_model, tiny_spec, root, rungs=rungs))
    art = str(Path(spec.artifacts.path).resolve())
    return TrialSetup(spec.model_dump_json(), art, tuple(range(len(rungs))), threads=1)


def test_concurrent_trials_sharing_a_prefix_compute_it_once(tiny_model, tiny_spec, tmp_path) -> None:
    setup = _setup(tiny_model, tiny_spec, tmp_path, [{}])
    reports: dict[str, list[dict[str, Any]]] = {"a": [], "b": []}
    point = {"pruning": 1, "pruning.1.amount": 0.5, "quantization": 0}
    threads = [
        threading.Thread(target=run_trial, args=(setup, point | {"quantization": q}, reports[k].append, k))
        for k, q in (("a", 0), ("b", 1))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    (a,), (b,) = reports["a"], reports["b"]
    shared = [sid for sid in a["computed"] + a["cached"] if sid in b["computed"] + b["cached"]]
    kinds = {sid.split("-")[0] for sid in shared}
    assert {"load", "prune", "distill", "export", "optimize"} <= kinds
    for sid in shared:  # each shared stage: computed by exactly one of the two, found cached by the other
        assert (sid in a["computed"]) != (sid in b["computed"]), sid


def test_a_higher_rung_resumes_the_distillation_from_its_checkpoint(tiny_model, tiny_spec, tmp_path) -> None:
    setup = _setup(tiny_model, tiny_spec, tmp_path, [{"eval_samples": 16, "distill_fraction": 0.5}, {}])
    results: list[dict[str, Any]] = []
    run_trial(setup, {"pruning": 1, "pruning.1.amount": 0.5, "quantization": 0}, results.append, "t")
    low, high = results
    assert low["rung"] == 0 and high["rung"] == 1 and high["resumed_from_step"] == 4
    ctx = Context(
        root=str(Path(setup.root) / "stages"), task="feature-extraction", eval_texts=[], calibration=[]
    )
    (low_kd,) = [cached(ctx, s) for s in low["computed"] if s.startswith("distill-")]
    (high_kd,) = [cached(ctx, s) for s in high["computed"] if s.startswith("distill-")]
    assert low_kd["steps"] == 4 and high_kd["steps"] == 8 and high_kd["schedule_steps"] == 8
    # One continuous curve: the resumed run's first half is the stopped run's.
    assert len(high_kd["loss_curve"]) == 8 and high_kd["loss_curve"][:4] == low_kd["loss_curve"]


def test_grid_visits_every_distinct_recipe_once(tiny_model, tiny_spec, slimline, tmp_path) -> None:
    spec = _search_spec(tiny_model, tiny_spec, tmp_path, strategy="grid")
    spec["search"]["space"]["pruning"] = ["none", {"method": "heads", "amount": [0.25, 0.5]}]
    spec["search"]["space"]["quantization"] = ["none"]  # the other tests cover a 2-D space
    manifest = _run(slimline, spec, tmp_path / "spec.yaml", "--executor", "local")
    search = manifest["search"]
    # none, heads 0.25, heads 0.5: three recipes, each once, all finished.
    labels = sorted(t["label"] for t in search["trials"])
    assert len(labels) == 3 == len(set(labels)) and search["trials_finished"] == 3
    assert {v["label"] for v in manifest["variants"]} == set(labels)
