"""Distillation techniques: one module each, found by tasks.catalog.

Import name: `slimline.tasks.distillation` (this folder is `tasks/distillation/` in the repository).

A module holds a TechniqueConfig with stage "distill" and
`apply(cfg, student, teacher, tokenizer, texts, *, task, max_length, device) -> Record`, bound to
it with `@register_technique` (tasks/techniques.py), which trains the student in place. A config
with `resumable = True` registers a `resume` check beside it, and its apply then also takes
`resume_from` (the folder of a stopped run to continue).
"""
