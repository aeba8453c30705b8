"""Pure compute for slimline: one module per stage and per technique, paths in, artifact + record out.

Import name: `slimline.tasks` (this folder is `tasks/` in the repository).

Nothing here imports ray or mlflow; the pipeline layer decides where these functions run.
"""

from slimline.tasks.base import Record, SkipVariant, StepConfig, TaskError, TechniqueConfig

__all__ = ["Record", "SkipVariant", "StepConfig", "TaskError", "TechniqueConfig"]
