"""Example specs shipped with slimline.

Import name: `slimline.pipelines.examples` (this folder is `pipelines/examples/` in the repository).
"""
