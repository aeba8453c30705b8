"""The CLI against a real `mlflow server` on 127.0.0.1: run, register, browse, pull; outages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from mlflow import MlflowClient

VARIANTS = {
    "pruning": ["none", {"method": "ffn", "amount": 0.5}],
    "quantization": ["none", {"method": "dynamic-int8", "per_channel": True}],
}


def _spec(
    tiny_model, tiny_spec, tmp_path: Path, name: str = "tiny-http", artifacts: Path | None = None
) -> Path:
    spec = tiny_spec(
        tiny_model("bert"),
        "feature-extraction",
        artifacts or tmp_path / "artifacts",
        variants=VARIANTS,
        registry={"model_name": name},  # one name per test: the server is shared by the module
        # Size is deterministic, latency is not: the same spec then selects the same variant.
        select={"constraints": {"fidelity": {"min": 0.5}}, "objectives": ["size_mb"], "top_k": 1},
    )
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_run_register_browse_and_pull_over_http(
    mlflow_server, tiny_model, tiny_spec, slimline, tmp_path, shared_artifacts
) -> None:
    spec = _spec(tiny_model, tiny_spec, tmp_path, artifacts=shared_artifacts)
    uri = mlflow_server.uri
    first = slimline("run", str(spec), "--executor", "local", "--tracking-uri", uri, "--json")
    assert first.returncode == 0, first.stderr[-3000:]
    manifest = json.loads(first.stdout)
    assert manifest["registered"][0]["aliases"] == ["champion"]
    listing = slimline("registry", "ls", "--tracking-uri", uri)
    assert listing.returncode == 0 and "tiny-http" in listing.stdout and "champion=v1" in listing.stdout
    shown = slimline("registry", "show", "tiny-http@champion", "--tracking-uri", uri, "--json")
    assert json.loads(shown.stdout)["variant"] == manifest["selected"][0]
    pulled = slimline(
        "registry", "pull", "tiny-http@champion", "-o", str(tmp_path / "pulled"), "--tracking-uri", uri
    )
    assert pulled.returncode == 0, pulled.stderr[-2000:]
    onnx_path = Path(pulled.stdout.strip())
    assert onnx_path.is_file() and (onnx_path.parent / "tokenizer.json").is_file()

    # The same spec again: new tracking runs, no new model versions.
    before = len(MlflowClient(tracking_uri=uri, registry_uri=uri).search_model_versions("name='tiny-http'"))
    again = slimline("run", str(spec), "--executor", "local", "--tracking-uri", uri)
    assert again.returncode == 0, again.stderr[-3000:]
    after = MlflowClient(tracking_uri=uri, registry_uri=uri).search_model_versions("name='tiny-http'")
    assert len(after) == before == len(manifest["selected"]) == 1
    assert "already champion" in again.stdout


def test_server_gone_mid_run_loses_nothing(mlflow_server, tiny_model, tiny_spec, slimline, tmp_path) -> None:
    spec = _spec(tiny_model, tiny_spec, tmp_path, name="tiny-outage")
    uri = mlflow_server.uri
    exe = Path(sys.executable).with_name("slimline")
    cmd = [str(exe), "run", str(spec), "--executor", "local", "--tracking-uri", uri]
    # MLflow retries HTTP calls with back-off for minutes by default; one quick try is enough here.
    env = {**os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stderr is not None
    for line in proc.stderr:
        if "succeeded load" in line:  # the server passed the start-up check; now it goes away
            mlflow_server.stop()
            break
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 1
    assert f"registry {uri}" in err and "slimline registry push" in err
    (run_dir,) = (tmp_path / "artifacts").glob("tiny-*")
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "succeeded"

    mlflow_server.start()  # back on the same port and store
    pushed = slimline("registry", "push", str(run_dir), "--tracking-uri", uri)
    assert pushed.returncode == 0, pushed.stderr[-2000:]
    assert "registered tiny-outage version 1 [champion]" in pushed.stdout
    assert json.loads((run_dir / "manifest.json").read_text())["registered"]


def test_unreachable_server_is_exit_two_before_any_work(
    tiny_model, tiny_spec, slimline, tmp_path, unused_port
) -> None:
    spec = _spec(tiny_model, tiny_spec, tmp_path)
    uri = f"http://127.0.0.1:{unused_port}"
    res = slimline("run", str(spec), "--tracking-uri", uri, timeout=120)
    assert res.returncode == 2
    line = res.stderr.strip()
    assert "\n" not in line and uri in line and "unreachable" in line
    assert not (tmp_path / "artifacts").exists()  # nothing started
