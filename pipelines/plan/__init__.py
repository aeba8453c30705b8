"""The plan: the spec (or a search's trials) expanded into a DAG of stages with content-hash ids.

Import name: `slimline.pipelines.plan` (this folder is `pipelines/plan/` in the repository).
"""
