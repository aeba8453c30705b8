"""One run: execute the plan, time, select, gate against the champion, publish, collect garbage.

Import name: `slimline.pipelines.run` (this folder is `pipelines/run/` in the repository).
"""
