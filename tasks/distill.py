"""The distill stage: load the pruned student and its teacher, run a distillation technique, save."""

from __future__ import annotations

from pathlib import Path

from .base import Record, TechniqueConfig, atomic_dir
from .catalog import technique_of
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
) -> Record:
    """Distil the pruned model at `student_dir` from the base model at `teacher_dir`; save to `out_dir`."""
    technique = technique_of(cfg, "distill")
    student = load_pretrained(str(student_dir), task)
    teacher = load_pretrained(str(teacher_dir), task)
    tok = load_tokenizer(str(student_dir))
    rec = technique.apply(cfg, student, teacher, tok, texts, task=task, max_length=max_length, device=device)
    with atomic_dir(Path(out_dir)) as tmp:
        save_pretrained(student.eval(), tok, tmp)
    return {"stage": "distill", "config": cfg.to_json(), "path": str(out_dir), **rec}
