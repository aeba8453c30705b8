"""The spec: the YAML contract, its search and serve blocks, and the strict YAML reader.

Import name: `slimline.pipelines.spec` (this folder is `pipelines/spec/` in the repository).
"""
