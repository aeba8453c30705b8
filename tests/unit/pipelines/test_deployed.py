"""evaluate.serving's policy, with a stand-in ServingProbe (the Serve side is covered by
tests/integration/test_serve_cli.py): what the manifest and the report say in each case."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slimline.pipelines.ports import NullObserver
from slimline.pipelines.report.report import deployed_line
from slimline.pipelines.run.deployed import measure_deployed
from slimline.pipelines.spec.spec import ServingLoad


def _rows(tmp_path: Path) -> list[dict[str, Any]]:
    return [
        {"id": "v-base", "label": "none × none", "onnx": str(tmp_path / "b" / "model.onnx"), "metrics": {}},
        {
            "id": "v-pick",
            "label": "none × dynamic-int8",
            "onnx": str(tmp_path / "p" / "model.onnx"),
            "metrics": {"speedup_vs_baseline": 1.8},
        },
    ]


class Probe:
    """Answers fixed rounds per graph folder; or fails like a deployment that never came up."""

    def __init__(self, rps: dict[str, list[float]] | None = None) -> None:
        self.rps, self.seen = rps, {}

    def measure(self, graphs: dict[str, Path], load: ServingLoad, texts: list[str]) -> dict[str, Any]:
        self.seen = {"graphs": graphs, "load": load, "texts": texts}
        if self.rps is None:
            raise RuntimeError("Deploying app 'slimline-judge-0' failed:\nreplica died")
        out = {}
        for key, rounds in self.rps.items():
            got = [{"rps": r, "p50_ms": 1000 / r, "errors": 0} for r in rounds]
            out[key] = {"rps": sorted(rounds)[len(rounds) // 2], "texts_per_s": 0.0, "p50_ms": 5.0,
                        "p99_ms": 9.0, "errors": 0, "rounds": got}  # fmt: skip
        return out


def _manifest(rows: list[dict[str, Any]], dep: dict[str, Any] | None) -> dict[str, Any]:
    return {"variants": rows, "deployed": dep}


def test_the_pick_and_the_baseline_are_served_and_the_ratio_is_paired_by_round(tmp_path) -> None:
    rows = _rows(tmp_path)
    probe = Probe({"v-base": [10.0, 20.0, 30.0], "v-pick": [30.0, 30.0, 30.0]})
    load = ServingLoad(clients=4, rounds=3)
    dep = measure_deployed(probe, load, rows, "v-base", ["v-pick"], ["a", "b"], NullObserver())
    assert dep is not None and "error" not in dep
    assert probe.seen["graphs"] == {"v-base": tmp_path / "b", "v-pick": tmp_path / "p"}
    assert probe.seen["texts"] == ["a", "b"]
    assert dep["ratio"] == 1.5  # median of 3.0, 1.5, 1.0: rounds paired, not medians divided
    assert rows[1]["served"]["p50_ms"] == 5.0 and rows[0]["served"]["errors"] == 0
    line = deployed_line(_manifest(rows, dep))
    assert line is not None and line.startswith("deployed (Ray Serve proxy, 4 clients, 1 text(s)/request)")
    assert "1.50x served (graph timing 1.80x)" in line and "none × dynamic-int8" in line


def test_a_deployment_that_fails_is_one_line_and_nothing_selected_serves_nothing(tmp_path) -> None:
    rows = _rows(tmp_path)
    dep = measure_deployed(Probe(None), ServingLoad(), rows, "v-base", ["v-pick"], ["a"], NullObserver())
    assert dep is not None and dep["error"] == "RuntimeError: replica died"
    assert "served" not in rows[1]
    assert deployed_line(_manifest(rows, dep)).endswith("not measured: RuntimeError: replica died")
    assert measure_deployed(Probe({}), ServingLoad(), rows, "v-base", [], ["a"], NullObserver()) is None
    assert deployed_line(_manifest(rows, None)) is None
