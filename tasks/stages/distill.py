"""The distill stage: load the pruned student and its teacher, run a distillation technique, save."""

from __future__ import annotations

from pathlib import Path

import torch
from slimline.tasks.base import Record, TaskError, TechniqueConfig, atomic_dir
from slimline.tasks.catalog import technique_of
from slimline.tasks.distillation.kd import STATE, DistillConfig
from slimline.tasks.load import load_pretrained, load_tokenizer, save_pretrained


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

    With `resume_from` (the output folder of a stopped run of the same schedule, see
    `kd.resumable`), the student starts from that run's weights, optimizer, LR schedule and
    step, and the record's loss curve covers every step from 1. A folder that cannot be resumed
    is a TaskError. A run that stops before `cfg.steps` leaves its checkpoint in `out_dir` as
    `kd.STATE`; a finished run does not (the optimizer state is twice the model).
    """
    technique = technique_of(cfg, "distill")
    extra: dict[str, Path] = {}
    if resume_from is not None:
        # Checked before loading any weights; the technique checks the checkpoint's schedule.
        if not isinstance(cfg, DistillConfig):
            raise TaskError(f"{type(cfg).__name__} cannot resume a stopped distillation")
        if not (Path(resume_from) / STATE).is_file():
            raise TaskError(f"cannot resume distillation from {resume_from}: it has no {STATE}")
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
            torch.save(state, tmp / STATE)
    return {"stage": "distill", "config": cfg.to_json(), "path": str(out_dir), **rec}
