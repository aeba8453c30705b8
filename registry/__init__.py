"""The MLflow adapter behind the Registry port, and an in-memory registry for `--registry none`.

Import name: `slimline.registry` (this folder is `registry/` in the repository).
"""
