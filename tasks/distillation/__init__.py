"""Distillation techniques: one module each, found by tasks.catalog.

Import name: `slimline.tasks.distillation` (this folder is `tasks/distillation/` in the repository).

A module holds `CONFIG` (a TechniqueConfig with stage "distill") and
`apply(cfg, student, teacher, tokenizer, texts, *, task, max_length, device) -> Record`, which
trains the student in place.
"""
