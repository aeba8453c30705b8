"""Data files shipped with slimline (the built-in English corpus).

Import name: `slimline.tasks.data` (this folder is `tasks/data/` in the repository).
"""
