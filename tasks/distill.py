"""The distill stage: load the pruned student and its teacher, run a distillation technique, save."""

from __future__ import annotations

from pathlib import Path

import torch

from .base import Record, TechniqueConfig, atomic_dir
from .catalog import technique_of
from .distillation.kd import STATE
from .load import load_pretrained, load_tokenizer, save_pretrained


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

    With `resume_from` (the output of a stopped run of the same schedule, see
    kd.resumable), the student starts from that run's weights, optimizer and step.
    """
    technique = technique_of(cfg, "distill")
    resume = None
    if resume_from is not None:
        resume = torch.load(Path(resume_from) / STATE, map_location="cpu", weights_only=True)
    student = load_pretrained(str(resume_from or student_dir), task)
    teacher = load_pretrained(str(teacher_dir), task)
    tok = load_tokenizer(str(student_dir))
    extra = {"resume": resume} if resume is not None else {}
    rec = technique.apply(
        cfg, student, teacher, tok, texts, task=task, max_length=max_length, device=device, **extra
    )
    state = rec.pop("_state", None)
    with atomic_dir(Path(out_dir)) as tmp:
        save_pretrained(student.eval(), tok, tmp)
        if state is not None:
            torch.save(state, tmp / STATE)
    return {"stage": "distill", "config": cfg.to_json(), "path": str(out_dir), **rec}
