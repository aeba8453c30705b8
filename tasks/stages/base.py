"""What every stage kind shares: the run context, the call a stage receives, and its declaration.

A stage kind is data (`StageKind`): its name, how it runs, the logic version of a stage without
a config, its rough cost for scheduling, and the kinds of other stages it reads. The executor's
glue (pipelines.run.stage) looks a kind up in `slimline.tasks.stages.STAGES` and calls `run`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimline.tasks.base import Record, TaskError, read_json_or_none

# The status a finished stage's record carries (the manifest contract's string; the enum lives in
# pipelines, which tasks may not import).
SUCCEEDED = "succeeded"


@dataclass
class Context:
    """Everything a stage needs besides its records: small, picklable, the same for every stage."""

    root: str  # <artifacts>/stages
    task: str
    eval_texts: list[str]
    calibration: list[str]
    labels: list[int] | None = None
    pairs: list[tuple[int, int, float]] | None = None  # (text i, text j, human rating) among eval_texts
    train_texts: list[str] = field(default_factory=list)  # distillation text, disjoint from eval_texts
    max_length: int = 128
    eval_batch: int = 16
    threads: int = 1
    device: str = "cpu"


def record_path(ctx: Context, sid: str) -> Path:
    """Where a finished stage's record lives (written last, so it marks completion)."""
    return Path(ctx.root) / f"{sid}.json"


def cached(ctx: Context, sid: str) -> Record | None:
    """The record of a finished stage, or None."""
    return read_json_or_none(record_path(ctx, sid), "stage record")


@dataclass(frozen=True)
class StageCall:
    """One stage to run: its plan entry (as a dict), its parent's record, every input, where to write."""

    stage: dict[str, Any]
    parent: Record | None
    inputs: dict[str, Record]  # parent and needed stage ids (latency: variant ids) to records
    out: Path  # <ctx.root>/<stage id>: the stage's own artifact folder
    ctx: Context

    @property
    def config(self) -> dict[str, Any]:
        """The stage's config, as JSON data."""
        return self.stage["config"]

    @property
    def src(self) -> Path:
        """The parent's artifact (a model folder or a graph)."""
        if self.parent is None:
            raise TaskError(f"a {self.stage['kind']} stage needs a parent")
        return Path(self.parent["path"])

    def needed(self, i: int = 0) -> Record:
        """The record of the stage's `i`-th need (e.g. the base model a distillation learns from)."""
        return self.inputs[self.stage["needs"][i]]


@dataclass(frozen=True)
class StageKind:
    """One kind of stage: how it runs and what the planner and scheduler need to know of it."""

    kind: str
    run: Callable[[StageCall], Record]
    doc: str  # one line: what the stage does
    # Stages without a config (they measure): bump it when what the stage computes changes, so
    # cached results of the old computation are not reused. None: the config's own version counts.
    logic_version: int | None = None
    # Rough relative cost (measured on MiniLM, 1 thread), for scheduling order only; or a function
    # of the stage's config when it depends on it (a distillation's steps).
    cost: float | Callable[[dict[str, Any]], float] = 1.0
    needs: tuple[str, ...] = ()  # kinds of the other stages it reads besides its parent

    def cost_of(self, config: dict[str, Any]) -> float:
        """The estimated cost of one stage of this kind with `config`."""
        return self.cost(config) if callable(self.cost) else float(self.cost)
