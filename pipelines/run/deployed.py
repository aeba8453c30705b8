"""`evaluate.serving`: judge the deployment, not only the graph.

After selection the run's pick (the first selected variant) and its fp32 baseline are served side
by side through the ServingProbe port and loaded alike with the run's own eval texts. What the
endpoint delivers goes into the manifest (`deployed`), the pick's row (`served`), the report's
"deployed" line and the registered version. A probe that fails costs the run nothing else: the
section then holds one line saying why.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from slimline.pipelines.ports import Observer, ServingProbe
from slimline.pipelines.spec.spec import ServingLoad
from slimline.tasks.base import Record

SERVED = ("rps", "texts_per_s", "p50_ms", "p99_ms", "errors")  # what a row and the registry keep


def measure_deployed(
    probe: ServingProbe,
    load: ServingLoad,
    rows: list[dict[str, Any]],
    baseline: str,
    selected: list[str],
    texts: list[str],
    observer: Observer,
) -> dict[str, Any] | None:
    """The `deployed` section (None when nothing was selected); sets `served` on both rows."""
    if not selected:
        return None
    by_id = {r["id"]: r for r in rows}
    pick = selected[0]
    graphs = {vid: Path(by_id[vid]["onnx"]).parent for vid in (baseline, pick) if by_id[vid].get("onnx")}
    section: dict[str, Any] = {"load": load.model_dump(), "variant": pick, "baseline": baseline}
    if len(graphs) < 2:
        return {**section, "error": "the pick or the baseline has no graph to serve"}
    label = by_id[pick]["label"]
    observer.note(
        f"serving {label} and the baseline side by side: {load.clients} clients, {load.requests} requests"
    )
    try:
        got = probe.measure(graphs, load, texts)
    except Exception as exc:
        lines = [line for line in str(exc).splitlines() if line.strip()]
        return {**section, "error": f"{type(exc).__name__}: {lines[-1] if lines else ''}"[:300]}
    for vid, stats in got.items():
        by_id[vid]["served"] = {k: float(stats[k]) for k in SERVED}
    section["results"] = got
    section["ratio"] = _paired_ratio(got[pick]["rounds"], got[baseline]["rounds"])
    return section


def _paired_ratio(pick: list[Record], base: list[Record]) -> float:
    """Median over rounds of the pick's served throughput over the baseline's in the same round."""
    return float(statistics.median(p["rps"] / b["rps"] for p, b in zip(pick, base, strict=True) if b["rps"]))
