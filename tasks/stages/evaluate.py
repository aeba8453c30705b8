"""The evaluate stage: one variant's quality metrics against the baseline reference.

Latency is not measured here: every graph is timed side by side in one latency stage.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from slimline.tasks import decode, metrics
from slimline.tasks import graph as graph_io
from slimline.tasks.base import Record, TaskError
from slimline.tasks.stages._outputs import generate, outputs, task_metrics
from slimline.tasks.stages.base import StageCall, StageKind


def run(call: StageCall) -> Record:
    """Quality metrics of the parent graph against the reference record (the stage's need)."""
    graph, ref, ctx = call.src, call.needed(), call.ctx
    top = [np.load(p) for p in ref["top"]] if ref.get("top") else [None, None]
    got = outputs(graph, ctx, probe=top[0])
    base = metrics.Outputs(ctx.task, np.load(ref["reference"]), ref.get("nll"), *top, got.multi_label)
    meta = graph_io.read_meta(graph)
    found: dict[str, Any] = {
        "fidelity": metrics.fidelity(base, got),
        **metrics.agreement(base, got),
        "size_mb": graph_io.onnx_size_bytes(graph) / 1e6,
    }
    if ref.get("generated") and meta.get("kv_cache"):
        reference = np.load(ref["generated"])
        found["generation_agreement"] = decode.generation_agreement(reference, generate(graph, ctx))
    for name, value in task_metrics(got, ctx).items():
        found[name] = value
        found[f"{name}_delta"] = value - ref["task_metrics"][name]  # variant minus baseline
    bad = sorted(k for k, v in found.items() if v is not None and not math.isfinite(v))
    if bad:
        raise TaskError(f"non-finite metrics: {', '.join(bad)}")
    return {"path": str(graph), "metrics": found, "exporter": meta.get("exporter")}


STAGE = StageKind(
    kind="evaluate",
    run=run,
    doc="a variant's quality metrics (fidelity, agreement, task metrics, size) against the reference",
    # 3: KL over top-k, rated pairs, task deltas; 4: greedy-generation agreement of decoding graphs;
    # 5: the model's own output pipeline (pooling, normalize, max length, multi-label sigmoid)
    logic_version=5,
    cost=1.0,
    needs=("reference",),
)
