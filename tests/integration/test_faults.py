"""Crashes and outages, for real: the driver SIGKILLed mid-sweep, the MLflow server stopped
mid-publish. Afterwards nothing finished is lost and the registry holds no duplicates."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

VARIANTS = {
    "pruning": ["none", {"method": "heads", "amount": 0.5}],
    "quantization": ["none", {"method": "dynamic-int8", "per_channel": True}],
}
SELECT = {"constraints": {"fidelity": {"min": 0.5}}, "objectives": ["size_mb", "fidelity"], "top_k": 2}


def _spec(tiny_model, tiny_spec, tmp_path: Path, name: str) -> Path:
    spec = tiny_spec(
        tiny_model("bert"),
        "feature-extraction",
        tmp_path / "artifacts",
        variants=VARIANTS,
        select=SELECT,
        registry={"model_name": name, "log_models": "all"},
    )
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _versions(uri: str, name: str) -> list:
    return MlflowClient(tracking_uri=uri, registry_uri=uri).search_model_versions(f"name='{name}'")


def _assert_registered_once(uri: str, manifest: dict, name: str) -> None:
    """One version per selected variant, the alias on the first pick, one finished parent run."""
    c = MlflowClient(tracking_uri=uri, registry_uri=uri)
    versions = _versions(uri, name)
    variants = [v.tags["slimline.variant_id"] for v in versions]
    assert sorted(variants) == sorted(manifest["selected"]), variants
    assert (
        c.get_model_version_by_alias(name, "champion").tags["slimline.variant_id"] == manifest["selected"][0]
    )
    (exp,) = [e for e in c.search_experiments() if e.name == "tiny"]
    parents = c.search_runs([exp.experiment_id], f"tags.`slimline.run_id` = '{manifest['run_id']}'")
    assert [p.info.status for p in parents] == ["FINISHED"]
    models = c.search_logged_models([exp.experiment_id])
    ready = [m for m in models if str(m.status).endswith("READY")]
    per_variant = [m.source_run_id for m in ready]
    assert len(per_variant) == len(set(per_variant)), "a variant's model was logged twice"


def test_driver_killed_mid_sweep_then_rerun(tiny_model, tiny_spec, tmp_path) -> None:
    spec = _spec(tiny_model, tiny_spec, tmp_path, "tiny-crash")
    uri = f"sqlite:///{tmp_path / 'slimline.db'}"
    exe = str(Path(sys.executable).with_name("slimline"))
    args = [exe, "run", str(spec), "--tracking-uri", uri]
    # Its own session: SIGKILL reaches the driver and the Ray processes it started, all at once.
    proc = subprocess.Popen(
        args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, start_new_session=True
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if "succeeded export" in line:
            os.killpg(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    stages = tmp_path / "artifacts" / "stages"
    finished = {p: p.stat().st_mtime_ns for p in stages.glob("*.json")}
    assert any(p.name.startswith("export-") for p in finished)
    again = subprocess.run([*args, "--json"], capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    manifest = json.loads(again.stdout)
    assert manifest["status"] == "succeeded"
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())  # reused, not rewritten
    _assert_registered_once(uri, manifest, "tiny-crash")
    # Publishing again adds no version (every stage is cached: no Ray needed for that).
    twice = subprocess.run(
        [*args, "--json", "--executor", "local"], capture_output=True, text=True, timeout=900
    )
    assert twice.returncode == 0 and len(_versions(uri, "tiny-crash")) == len(manifest["selected"])


def test_mlflow_server_stopped_mid_publish_then_push(
    tiny_model, tiny_spec, tmp_path, monkeypatch, slimline, own_mlflow_server
) -> None:
    from slimline.pipelines.run.local import LocalExecutor
    from slimline.pipelines.run.publish import publish
    from slimline.pipelines.run.run import run
    from slimline.pipelines.spec.spec import load_spec
    from slimline.registry.adapter import MlflowRegistry

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail fast while the server is away
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    server = own_mlflow_server
    spec = load_spec(_spec(tiny_model, tiny_spec, tmp_path, "tiny-outage"))
    manifest = run(spec, LocalExecutor())
    assert len(manifest["selected"]) == 2
    run_dir = tmp_path / "artifacts" / manifest["run_id"]
    reg = MlflowRegistry(server.uri)
    real_log = reg._log_onnx

    def log_then_stop(run_id: str, path: Path) -> str:
        model_id = real_log(run_id, path)
        server.stop()  # the server goes away after the first model is logged, mid-publish
        return model_id

    monkeypatch.setattr(reg, "_log_onnx", log_then_stop)
    with pytest.raises(Exception):  # noqa: B017 (whatever MLflow raises for a refused connection)
        publish(reg, json.loads((run_dir / "manifest.json").read_text()), spec, run_dir)
    assert _versions_or_none(server) is None
    server.start()  # same port, same store: what was done before the outage is still there
    pushed = slimline("registry", "push", str(run_dir), "--tracking-uri", server.uri)
    assert pushed.returncode == 0, pushed.stderr[-3000:]
    assert "registered tiny-outage version" in pushed.stdout
    _assert_registered_once(server.uri, manifest, "tiny-outage")


def _versions_or_none(server) -> list | None:
    try:
        return _versions(server.uri, "tiny-outage")
    except Exception:
        return None


def test_two_runs_of_one_spec_at_once_compute_and_register_once(tiny_model, tiny_spec, tmp_path) -> None:
    spec = _spec(tiny_model, tiny_spec, tmp_path, "tiny-twice")
    uri = f"sqlite:///{tmp_path / 'slimline.db'}"
    exe = str(Path(sys.executable).with_name("slimline"))
    args = [exe, "run", str(spec), "--executor", "local", "--tracking-uri", uri, "--json"]
    procs = [
        subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    results = [p.communicate(timeout=900) for p in procs]
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err[-3000:]
    manifests = [json.loads(out) for out, _ in results]
    assert manifests[0]["selected"] == manifests[1]["selected"]
    # Each stage logs one line where it is computed; a stage the other run computed is reused.
    computed = [
        re.sub(r" \(\d+\.\ds\)$", "", line.split("] succeeded", 1)[1]).split()
        for _, err in results
        for line in err.splitlines()
        if "] succeeded" in line and "latency" not in line and "champion" not in line
    ]
    assert computed and len(computed) == len({tuple(c) for c in computed}), computed
    assert len(_versions(uri, "tiny-twice")) == len(manifests[0]["selected"])
