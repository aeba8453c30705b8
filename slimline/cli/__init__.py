"""The command line: one module per command group, a thin layer over `slimline.api`.

Import name: `slimline.cli` (this folder is `slimline/cli/` in the repository).
"""
