"""The distill stage: load the pruned student and its teacher, run a distillation technique, save."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from slimline.tasks.base import Record, TaskError, TechniqueConfig, atomic_dir
from slimline.tasks.catalog import make_config, technique_of
from slimline.tasks.load import load_pretrained, load_tokenizer, save_pretrained
from slimline.tasks.stages.base import SUCCEEDED, Context, StageCall, StageKind, cached


def apply(
    cfg: TechniqueConfig,
    student_dir: Path,
    teacher_dir: Path,
    out_dir: Path,
    *,
    task: str,
    texts: list[str],
    max_length: int = 128,
    device: str = "cpu",
    resume_from: Path | None = None,
) -> Record:
    """Distil the pruned model at `student_dir` from the base model at `teacher_dir`; save to `out_dir`.

    With `resume_from` (the output folder of a stopped run of the same schedule, see the
    technique's `resume.step`), the student starts from that run's weights, optimizer, LR
    schedule and step, and the record's loss curve covers every step from 1. A folder that cannot
    be resumed, or a technique that is not `resumable`, is a TaskError. A run that stops before
    `cfg.steps` leaves its checkpoint in `out_dir` as the technique's `resume.state_file`; a
    finished run does not (the optimizer state is twice the model).
    """
    technique = technique_of(cfg, "distill")
    extra: dict[str, Path] = {}
    if resume_from is not None:
        # Checked before loading any weights; the technique checks the checkpoint's schedule.
        if not cfg.resumable or technique.resume is None:
            raise TaskError(f"{type(cfg).__name__} cannot resume a stopped distillation")
        if not (Path(resume_from) / technique.resume.state_file).is_file():
            raise TaskError(
                f"cannot resume distillation from {resume_from}: it has no {technique.resume.state_file}"
            )
        extra["resume_from"] = Path(resume_from)
    student = load_pretrained(str(resume_from or student_dir), task)
    teacher = load_pretrained(str(teacher_dir), task)
    tok = load_tokenizer(str(student_dir))
    rec = technique.apply(
        cfg, student, teacher, tok, texts, task=task, max_length=max_length, device=device, **extra
    )
    state = rec.pop("_state", None)  # tensors: saved beside the student, never in the record
    with atomic_dir(Path(out_dir)) as tmp:
        save_pretrained(student.eval(), tok, tmp)
        if state is not None:
            if technique.resume is None:  # a checkpoint nothing could ever resume: a bug, not a file
                raise TaskError(f"{type(cfg).__name__} is not resumable but returned a checkpoint")
            torch.save(state, tmp / technique.resume.state_file)
    return {"stage": "distill", "config": cfg.to_json(), "path": str(out_dir), **rec}


# The stage kind (see tasks/stages/base.py). Imported here, below `apply`, so that this part and
# the technique part above can be edited apart; hoist into the imports when convenient.


# Rough cost of one step of batch 16 on MiniLM, in the units of StageKind.cost.
COST_PER_STEP = 0.5


def _resume_from(candidates: list[str], cfg: Any, ctx: Context) -> Path | None:
    """The furthest finished earlier stop of this distillation whose checkpoint fits, if any."""
    resume = technique_of(cfg, "distill").resume
    if not cfg.resumable or resume is None:
        return None
    for sid in candidates:  # largest stop first
        rec = cached(ctx, sid)
        if rec is not None and rec.get("status", SUCCEEDED) == SUCCEEDED:
            folder = Path(rec["path"])
            if folder.is_dir() and resume.step(folder, cfg) is not None:
                return folder
    return None


def run(call: StageCall) -> Record:
    """Distil the parent (pruned) model from the loaded base model, resuming an earlier stop if one fits."""
    ctx = call.ctx
    kd = make_config(call.config, "distill")
    return apply(
        kd,
        call.src,
        Path(call.needed()["path"]),  # the teacher: the loaded base model
        call.out,
        task=ctx.task,
        texts=ctx.train_texts,
        max_length=ctx.max_length,
        device=ctx.device,
        resume_from=_resume_from(call.stage.get("resume") or [], kd, ctx),
    )


def _cost(config: dict[str, Any]) -> float:
    """Proportional to the steps it runs: up to its stop when a search stops it early."""
    return COST_PER_STEP * float(config.get("stop_after") or config["steps"])


STAGE = StageKind(
    kind="distill",
    run=run,
    doc="train the pruned model to match the base model's outputs (knowledge distillation)",
    cost=_cost,
    needs=("load",),
)
