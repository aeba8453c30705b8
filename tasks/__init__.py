"""Pure compute for slimline: one module per technique, paths in, artifact + record out.

Nothing here imports ray or mlflow; the pipeline layer decides where these functions run.
"""

from tasks.base import Record, SkipVariant, StepConfig, TaskError

__all__ = ["Record", "SkipVariant", "StepConfig", "TaskError"]
