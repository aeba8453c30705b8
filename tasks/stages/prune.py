"""The prune stage: load a model, apply one pruning technique (tasks/pruning/*), save it reloadable.

Structured techniques physically remove heads and channels from the weight matrices
(transformers 5 has no `prune_heads`) and update the config, so the saved model is genuinely
smaller; see tasks.load for how such a model is loaded again.
"""

from __future__ import annotations

from pathlib import Path

from slimline.tasks.base import Record, TechniqueConfig, atomic_dir
from slimline.tasks.catalog import make_config, technique_of
from slimline.tasks.inputs import batches
from slimline.tasks.load import load_pretrained, load_tokenizer, save_pretrained
from slimline.tasks.profile import count_params
from slimline.tasks.stages.base import StageCall, StageKind


def apply(
    cfg: TechniqueConfig,
    model_dir: Path,
    out_dir: Path,
    *,
    task: str,
    calibration: list[str] | None = None,
    max_length: int = 128,
) -> Record:
    """Prune the model at `model_dir` and save the result (reloadable at its new size) to `out_dir`."""
    technique = technique_of(cfg, "prune")
    model = load_pretrained(str(model_dir), task)
    tok = load_tokenizer(str(model_dir))
    params_before, _ = count_params(model)
    calib = None
    if calibration and cfg.needs_calibration():
        calib = list(batches(tok, calibration, 8, max_length, kind="pt"))
    rec: Record = {"stage": "prune", "method": cfg.method, "config": cfg.to_json()}
    rec.update(technique.apply(cfg, model, calib))
    params_after, nonzero = count_params(model)
    with atomic_dir(Path(out_dir)) as tmp:
        save_pretrained(model, tok, tmp)
    rec.update(path=str(out_dir), params_before=params_before, params=params_after, nonzero_params=nonzero)
    return rec


# The stage kind (see tasks/stages/base.py). Imported here, below `apply`, so that this part and
# the technique part above can be edited apart; hoist into the imports when convenient.


def run(call: StageCall) -> Record:
    """Prune the parent's model with the technique the config names (calibration text if it reads any)."""
    ctx = call.ctx
    cfg = make_config(call.config, "prune")
    return apply(
        cfg, call.src, call.out, task=ctx.task, calibration=ctx.calibration, max_length=ctx.max_length
    )


STAGE = StageKind(
    kind="prune",
    run=run,
    doc="apply one pruning technique to the base model and save it at its new size",
    cost=1.0,
)
