"""What to run and how to judge it: spec, plan, run, select, report, schedule.

Import name: `slimline.pipelines` (this folder is `pipelines/` in the repository).
Imports `slimline.tasks` only; never ray or mlflow (those are adapters in cluster/ and registry/).
"""
