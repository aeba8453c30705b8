"""One module per stage kind: what it reads, its cost, its logic version, and how it runs.

Import name: `slimline.tasks.stages` (this folder is `tasks/stages/` in the repository).
"""
