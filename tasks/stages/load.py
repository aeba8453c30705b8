"""The load stage: the base model read from its source and saved as a local, reloadable folder."""

from __future__ import annotations

from slimline.tasks import load
from slimline.tasks.base import Record
from slimline.tasks.stages.base import StageCall, StageKind


def run(call: StageCall) -> Record:
    """Load the model the config names into the stage's folder."""
    return load.apply(load.LoadConfig.model_validate(call.config), call.out)


STAGE = StageKind(
    kind="load",
    run=run,
    doc="read the base model from its source and save it as a local folder",
    cost=3.0,
)
