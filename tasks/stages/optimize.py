"""The optimize stage: ONNX Runtime's graph optimisations applied to an exported graph."""

from __future__ import annotations

from slimline.tasks import optimize
from slimline.tasks.base import Record
from slimline.tasks.stages.base import StageCall, StageKind


def run(call: StageCall) -> Record:
    """Optimise the parent's graph into the stage's folder."""
    cfg = optimize.OptimizeConfig.model_validate(call.config)
    return optimize.apply(cfg, call.src, call.out, texts=call.ctx.calibration)


STAGE = StageKind(
    kind="optimize",
    run=run,
    doc="fuse and simplify the exported graph with ONNX Runtime's optimizer",
    cost=2.0,
)
