"""The one Metric table: its views keep their meaning, and docs/metrics.md is generated from it."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from slimline.pipelines.errors import SpecError
from slimline.pipelines.metrics import METRICS, columns, key_metrics, maximised, metrics_markdown, timed
from slimline.pipelines.report.report import COLUMNS
from slimline.pipelines.run.noise import TIMED
from slimline.pipelines.run.select import MAXIMISE
from slimline.pipelines.spec.spec import SelectSpec, parse_spec
from slimline.registry.browse import KEY_METRICS
from slimline.tasks.base import TASKS

ROOT = Path(__file__).resolve().parents[3]


def test_docs_metrics_page_is_generated_from_the_table() -> None:
    assert metrics_markdown().strip() in (ROOT / "docs" / "metrics.md").read_text(), (
        "regenerate docs/metrics.md from slimline.pipelines.metrics.metrics_markdown()"
    )


def test_every_row_is_well_formed() -> None:
    for name, m in METRICS.items():
        assert m.name == name and m.meaning and "\n" not in m.meaning
        assert m.direction in ("max", "min") and m.tasks and m.tasks <= set(TASKS)
        low, high = m.bounds
        assert low is None or high is None or low < high
        assert not m.key or m.column, f"{name}: a key metric is shown in the report too"


def test_the_views_are_the_table() -> None:
    assert maximised() == MAXIMISE and "fidelity" in MAXIMISE and "latency_p50_ms" not in MAXIMISE
    assert TIMED == timed() == {"latency_p50_ms", "latency_p95_ms", "throughput", "speedup_vs_baseline"}
    assert columns() == COLUMNS and COLUMNS[0] == ("fidelity", "fidelity", 4)
    assert key_metrics() == KEY_METRICS and set(KEY_METRICS) == {
        "fidelity",
        "speedup_vs_baseline",
        "latency_p50_ms",
        "size_mb",
    }


def test_spec_accepts_every_metric_and_names_them_for_an_unknown_one() -> None:
    SelectSpec.model_validate({"objectives": list(METRICS), "constraints": {n: {} for n in METRICS}})
    with pytest.raises(
        ValidationError, match=r"unknown metric 'latency'; (did you mean .*)?expected one of fidelity, "
    ):
        SelectSpec.model_validate({"objectives": ["latency"]})


@pytest.mark.parametrize("task", TASKS)
def test_an_unknown_metric_lists_only_what_the_models_task_reports(task: str) -> None:
    """Issue 26: an encoder's spec is not told about perplexity."""
    data = {"version": 1, "name": "t", "model": {"source": "./m", "task": task}}
    with pytest.raises(SpecError) as err:
        parse_spec(data | {"select": {"objectives": ["latency_p50"]}})
    listed = str(err.value).split("expected one of ")[1].split(" (got")[0].split(", ")
    assert listed == [n for n, m in METRICS.items() if task in m.tasks]
    assert "did you mean 'latency_p50_ms'?" in str(err.value)
