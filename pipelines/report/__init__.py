"""What a run shows: report.md, report.html with its plots, and the live progress display.

Import name: `slimline.pipelines.report` (this folder is `pipelines/report/` in the repository).
"""
