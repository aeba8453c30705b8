"""A whole sweep on a tiny model through the CLI with the in-process executor: statuses, metrics, cache."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import pytest
import yaml

from slimline.tasks.cpu_probe import cpu_flags
from slimline.tasks.quantization.peers import optimum_preset


@pytest.fixture(scope="module")
def spec_file(tiny_model, tiny_spec, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("run")
    variants = {
        "pruning": ["none", {"method": "heads", "amount": 0.5}],
        "quantization": ["none", {"method": "dynamic-int8", "per_channel": True}, {"method": "fp16"}],
    }
    # The peers' one-line recipes: ORT's defaults and the Optimum preset for this CPU.
    baselines = ["ort-default", "optimum-auto"]
    spec = tiny_spec(
        tiny_model("bert"), "feature-extraction", d / "artifacts", variants=variants, baselines=baselines
    )
    spec["evaluate"]["latency"]["shape"] = "real"  # timed on batches of eval texts as they come too
    path = d / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_run_then_rerun_is_fully_cached(spec_file: Path, cli) -> None:
    first = cli("run", str(spec_file), "--json", "--executor", "local", "--registry", "none")
    assert first.returncode == 0, first.stderr[-2000:]
    m = json.loads(first.stdout)
    by = {v["label"]: v for v in m["variants"]}
    assert len(by) == 8
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
    # shape: real beside the fixed shape, and each row's kernel efficiency against this CPU's peak.
    assert mets["real_speedup_vs_baseline"] == pytest.approx(
        m["baseline"]["real_latency_p50_ms"] / mets["real_latency_p50_ms"]
    )
    assert 0 < mets["peak_fraction"] < 1 and mets["gops"] > 0
    assert 1 <= len(m["selected"]) <= 2
    peers = [v for v in m["variants"] if v.get("peer")]
    assert sorted(v["peer"] for v in peers) == sorted(
        ["ort-default", optimum_preset(cpu_flags(), platform.machine())]
    )
    assert all(v["status"] == "succeeded" and v["metrics"]["latency_p50_ms"] > 0 for v in peers)
    assert set(m["rejected"]) | set(m["selected"]) == {
        v["id"] for v in m["variants"] if v["label"] != "none × none" and not v.get("peer")
    }
    assert not {v["id"] for v in peers} & set(m["selected"])  # timed and shown, never selected
    section = m["peers"]
    assert section["peers"] == {v["peer"]: v["id"] for v in peers} and section["pick"] == m["selected"][0]
    low, high = section["ci"]
    assert low <= section["speedup"] <= high and section["verdict"] in ("pick faster", "tied", "peer faster")
    run_dir = Path(yaml.safe_load(spec_file.read_text())["artifacts"]) / m["run_id"]
    assert json.loads((run_dir / "manifest.json").read_text())["run_id"] == m["run_id"]
    md = (run_dir / "report.md").read_text()
    assert all(v["label"] in md for v in m["variants"]) and "selected #1" in md
    first = md.splitlines()[2]  # under the title: the pick against the best peer, in words
    assert (
        first.startswith("**")
        and section["best"] in first
        and ("best peer" in first or "a peer won" in first)
    )
    assert "peer: ort-default's one-line recipe" in md
    assert "real p50 ms" in md and "of peak" in md
    page = (run_dir / "report.html").read_text()
    # Self-contained: the plot is embedded, nothing is fetched from elsewhere.
    assert "data:image/png;base64," in page and "http" not in page.replace("http-equiv", "")

    # --registry none: the same policy runs against a registry that keeps nothing.
    assert m["registry"] == "memory (nothing is kept)" and m["gate"]["reason"] == "no current champion"
    assert [r["variant"] for r in m["registered"]] == m["selected"]  # never a peer

    second = json.loads(cli("run", str(spec_file), "--json", "--executor", "local").stdout)
    assert {v["status"] for v in second["variants"]} == {"cached", "skipped"}
    # This time into the test's throwaway MLflow store ($MLFLOW_TRACKING_URI), alias and all.
    assert second["registered"] and second["registered"][0]["aliases"] == ["champion"]


def test_validate_and_plan_cli(spec_file: Path, tmp_path: Path, cli) -> None:
    ok = cli("validate", str(spec_file))
    assert ok.returncode == 0 and "valid" in ok.stdout
    out = cli("plan", str(spec_file))
    assert out.returncode == 0 and "skipped" in out.stdout and "export" in out.stdout
    assert "peer-int8(recipe=ort-default)" in out.stdout  # the plan shows the peers it will time
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(spec_file.read_text().replace("- optimum-auto", "- optimum-avx9"))
    res = cli("validate", str(unknown))
    assert res.returncode == 2 and "baselines" in res.stderr and "optimum-avx512_vnni" in res.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nname: x\nmodel: {source: x, task: nope}\n")
    res = cli("validate", str(bad))
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "model.task" in res.stderr and str(bad) in res.stderr


def test_missing_model_is_exit_two_with_one_line(tmp_path: Path, cli) -> None:
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
    res = cli("run", str(spec), "--executor", "local")
    assert res.returncode == 2
    line = res.stderr.strip()
    assert "\n" not in line and str(spec) in line and "model.source" in line and "no such folder" in line
