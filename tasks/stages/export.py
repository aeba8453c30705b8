"""The export stage: a (pruned, distilled) model folder exported to an ONNX graph, checked for parity."""

from __future__ import annotations

from slimline.tasks import export
from slimline.tasks.base import Record
from slimline.tasks.stages.base import StageCall, StageKind


def run(call: StageCall) -> Record:
    """Export the parent's model to ONNX in the stage's folder."""
    cfg = export.ExportConfig.model_validate(call.config)
    return export.apply(cfg, call.src, call.out, task=call.ctx.task, texts=call.ctx.calibration)


STAGE = StageKind(
    kind="export",
    run=run,
    doc="export the model to an ONNX graph and check it against torch",
    cost=8.0,
)
