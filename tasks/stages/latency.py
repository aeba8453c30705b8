"""The latency stage: every finished graph of a run timed side by side, in one task with a whole node.

It is not in the plan: a run adds it once every variant is evaluated (pipelines.run.run), and it
is never taken from the cache, since a ratio to the baseline is only honest when both were timed
together.
"""

from __future__ import annotations

from pathlib import Path

from slimline.tasks import evaluate
from slimline.tasks.base import Record
from slimline.tasks.stages.base import StageCall, StageKind


def run(call: StageCall) -> Record:
    """Latency statistics of every input graph; the inputs are keyed by variant id, not stage id."""
    graphs = {vid: Path(rec["path"]) for vid, rec in call.inputs.items()}
    lat = evaluate.LatencyConfig.model_validate(call.config)
    texts = call.ctx.calibration or call.ctx.eval_texts
    return {
        "latency": evaluate.onnx_latency_many(
            graphs, lat, texts, device=call.ctx.device, real_texts=call.ctx.eval_texts or None
        )
    }


STAGE = StageKind(
    kind="latency",
    run=run,
    doc="time every finished graph side by side (p50/p95, throughput, decoding speed)",
    cost=1.0,
    needs=("evaluate",),  # the graphs of the variants that finished, keyed by variant id
)
