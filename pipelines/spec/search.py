"""The `search:` block of a spec: a space of recipes, a sampler and a scheduler, a budget and rungs.

Grids (`variants:`) keep working unchanged; a spec with `search:` is searched instead, and its
`variants:` only sets the distillation defaults that the space does not override.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from slimline.pipelines.spec.base import StrictModel

Strategy = Literal["grid", "random", "tpe", "asha"]
Sampler = Literal["grid", "random", "tpe"]  # which recipes are tried
Scheduler = Literal["fifo", "asha"]  # whether trials stop early at a rung
# `strategy` (the first form of the block) names a sampler × scheduler pair; it stays accepted.
STRATEGIES: dict[str, tuple[str, str]] = {
    "grid": ("grid", "fifo"),
    "random": ("random", "fifo"),
    "tpe": ("tpe", "fifo"),
    "asha": ("random", "asha"),
}


class Rung(StrictModel):
    """One level of fidelity: how many eval texts, and what fraction of the distillation steps."""

    eval_samples: int | Literal["all"] = Field(default="all")
    distill_fraction: float = Field(default=1.0, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _positive(self) -> Rung:
        if isinstance(self.eval_samples, int) and self.eval_samples < 8:
            raise ValueError("eval_samples: at least 8 texts (or 'all')")
        return self


class Budget(StrictModel):
    # A search shorter than a minute ends before any trial reports: nothing to choose from.
    time_s: float = Field(ge=60, allow_inf_nan=False)


class SearchSpace(StrictModel):
    """Technique entries whose values may be lists (choices) or {min, max[, step][, log]} ranges.

    `pruning` and `quantization` take one entry or a list of entries (a choice among them,
    "none" included); `distillation` takes the distillation technique's fields (a range or list
    searches them).
    """

    pruning: list[Any] = Field(default_factory=lambda: ["none"], min_length=1)
    quantization: list[Any] = Field(default_factory=lambda: ["none"], min_length=1)
    distillation: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_entry(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = {
                k: [v] if k in ("pruning", "quantization") and not isinstance(v, list) else v
                for k, v in data.items()
            }
        return data


class SearchSpec(StrictModel):
    """How to search: `sampler` (grid | random | tpe) × `scheduler` (fifo | asha); `strategy` is an alias
    of a pair (asha = random × asha), kept because specs written before the split use it."""

    strategy: Strategy | None = None
    sampler: Sampler = "random"
    scheduler: Scheduler = "asha"
    trials: int = Field(default=16, ge=1, le=10_000)  # grid: ignored, the grid is every point
    budget: Budget | None = None  # wall-clock limit of the search phase; the finals still run
    space: SearchSpace = SearchSpace()
    rungs: list[Rung] = Field(default_factory=lambda: [Rung()], min_length=1, max_length=8)
    seed: int = Field(default=0, ge=0, le=2**32 - 1)  # what NumPy and Optuna samplers accept
    max_concurrent: int | None = Field(default=None, ge=1)  # default: as many as the resources fit
    reduction_factor: int = Field(default=2, ge=2, le=8)  # asha: keep 1/reduction_factor per rung

    @model_validator(mode="before")
    @classmethod
    def _strategy_alias(cls, data: Any) -> Any:
        name = data.get("strategy") if isinstance(data, dict) else None
        if not isinstance(name, str) or name not in STRATEGIES:
            return data  # absent, or wrong: the field's own check names search.strategy
        data = dict(data)
        for key, value in zip(("sampler", "scheduler"), STRATEGIES[name], strict=True):
            if data.setdefault(key, value) != value:
                raise ValueError(f"strategy {name!r} means {key}: {value}, but {key}: {data[key]!r} is set")
        return data

    @property
    def label(self) -> str:
        """The pair's short name: a strategy alias when there is one, else `sampler+scheduler`."""
        pair = (self.sampler, self.scheduler)
        return next((k for k, v in STRATEGIES.items() if v == pair), f"{self.sampler}+{self.scheduler}")

    @model_validator(mode="after")
    def _rungs_increase(self) -> SearchSpec:
        last = self.rungs[-1]
        if last.eval_samples != "all" or last.distill_fraction != 1.0:
            raise ValueError("the last rung is the full evaluation: eval_samples: all, distill_fraction: 1.0")
        sizes = [r.eval_samples for r in self.rungs[:-1]]
        if any(s == "all" for s in sizes):
            raise ValueError("only the last rung may use eval_samples: all")
        ints = [int(s) for s in sizes]
        fractions = [r.distill_fraction for r in self.rungs]
        if ints != sorted(ints) or fractions != sorted(fractions):
            raise ValueError("rungs must not decrease in eval_samples or distill_fraction")
        return self

    @property
    def multi_fidelity(self) -> bool:
        """Whether trials climb the rungs (asha); under fifo every trial runs the last rung only."""
        return self.scheduler == "asha" and len(self.rungs) > 1
