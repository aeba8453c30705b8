"""The in-process executor: serial, for debugging and tests. `submit` runs the stage at once."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

from slimline.pipelines.ports import ExecutorInfo
from slimline.pipelines.run.records import failed
from slimline.tasks.base import Record


class LocalExecutor:
    """Runs each stage in this process when it is submitted.

    Like the Ray executor, an unexpected exception in a stage becomes a failed record so the
    sweep goes on; `reraise=True` (the CLI's --debug) lets it propagate with its traceback.
    Stage resources are not enforced: one stage runs at a time, with the context's threads.
    """

    def __init__(self, *, reraise: bool = False) -> None:
        self._done: dict[int, Record] = {}
        self._next = 0
        self._reraise = reraise

    def submit(
        self, stage: dict[str, Any], inputs: dict[str, Record], ctx: Any, *, exclusive: bool = False
    ) -> int:
        from slimline.pipelines.run.stage import run_stage

        self._next += 1
        try:
            self._done[self._next] = run_stage(stage, inputs, ctx)
        except Exception as exc:
            if self._reraise:
                raise
            kind = stage["kind"]
            self._done[self._next] = failed(kind, f"{kind}: {type(exc).__name__}: {exc}")
        return self._next

    def wait(self, handles: list[int]) -> tuple[int, Record]:
        handle = handles[0]
        return handle, self._done.pop(handle)

    def cancel(self, handles: list[int]) -> None:
        for h in handles:
            self._done.pop(h, None)

    def prepare(self, artifact_root: Path) -> None:
        artifact_root.mkdir(parents=True, exist_ok=True)

    def describe(self) -> ExecutorInfo:
        cpus = os.cpu_count() or 1
        return ExecutorInfo(kind="local", workers=1, timing_node=platform.node(), timing_cpus=cpus, cpus=cpus)
