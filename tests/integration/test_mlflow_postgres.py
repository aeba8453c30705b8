"""Production-shaped MLflow: `mlflow server` on PostgreSQL with proxied artifacts, driven by the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

VARIANTS = {
    "pruning": ["none", {"method": "ffn", "amount": 0.5}],
    "quantization": ["none", {"method": "dynamic-int8", "per_channel": True}],
}


def test_run_register_gate_browse_and_pull_on_postgres(
    postgres, mlflow_server_on, tiny_model, tiny_spec, slimline, tmp_path, shared_artifacts
) -> None:
    server = mlflow_server_on(postgres.uri)  # clients never see the artifact folder: it is proxied
    spec = tiny_spec(
        tiny_model("bert"),
        "feature-extraction",
        shared_artifacts,  # stages other tests computed are found cached, as on a user's second run
        variants=VARIANTS,
        registry={"model_name": "tiny-pg"},
        select={"constraints": {"fidelity": {"min": 0.5}}, "objectives": ["size_mb"], "top_k": 1},
    )
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    run = ("run", str(path), "--executor", "local", "--tracking-uri", server.uri, "--json")
    first = slimline(*run)
    assert first.returncode == 0, first.stderr[-3000:]
    m = json.loads(first.stdout)
    assert m["registered"][0]["aliases"] == ["champion"] and m["gate"]["moved"]
    again = slimline(*run)  # the same spec again: the champion is re-measured and keeps the alias
    m2 = json.loads(again.stdout)
    assert again.returncode == 0 and not m2["gate"]["moved"] and m2["registered"][0]["version"] == "1"
    for uri in (server.uri, postgres.uri):  # through the server, and straight at the database
        listing = slimline("registry", "ls", "--tracking-uri", uri)
        assert listing.returncode == 0 and "tiny-pg" in listing.stdout and "champion=v1" in listing.stdout
    shown = slimline("registry", "show", "tiny-pg@champion", "--tracking-uri", server.uri, "--json")
    assert json.loads(shown.stdout)["variant"] == m["selected"][0]
    out = tmp_path / "pulled"
    pulled = slimline("registry", "pull", "tiny-pg@champion", "-o", str(out), "--tracking-uri", server.uri)
    assert pulled.returncode == 0 and Path(pulled.stdout.strip()) == out / "model.onnx"
    assert (out / "model.onnx").stat().st_size > 10_000 and (out / "meta.json").is_file()
    ui = slimline("ui", "--tracking-uri", server.uri)
    assert ui.returncode == 0 and "is a tracking server" in ui.stdout
