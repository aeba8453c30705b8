"""Pruning techniques: one module each, found by tasks.catalog (modules starting with _ are helpers).

Import name: `slimline.tasks.pruning` (this folder is `tasks/pruning/` in the repository).

A module holds a TechniqueConfig with stage "prune" and `apply(cfg, model, batches) -> Record`,
bound to it with `@register_technique` (tasks/techniques.py), which prunes the torch model in place.
"""
