"""What structured pruning scores channels by: weights alone, or activations on calibration text."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from slimline.tasks.base import TaskError, TechniqueConfig
from slimline.tasks.families import get_path


class StructuredCut(TechniqueConfig):
    """What the structured cuts share: they change shapes, and may score by activations."""

    stage: ClassVar = "prune"
    changes_shapes: ClassVar = True
    importance: Literal["weight", "activation"] = "weight"

    def needs_calibration(self) -> bool:
        return self.importance == "activation"


def require_batches(batches: list[dict[str, Tensor]] | None, what: str) -> list[dict[str, Tensor]]:
    """The calibration batches, or a clear error for a config that scores by activation without them."""
    if not batches:
        raise TaskError(f"{what} importance 'activation' needs calibration text")
    return batches


def input_abs_means(model: nn.Module, paths: list[str], batches: list[dict[str, Tensor]]) -> list[Tensor]:
    """Mean |input| per channel of each module at `paths`, over calibration batches (padding excluded)."""
    mods = [get_path(getattr(model, "base_model", model), p) for p in paths]
    sums: list[Tensor | None] = [None] * len(mods)
    count = 0
    mask: Tensor | None = None

    def hook(i: int) -> Callable[[nn.Module, tuple[Tensor, ...]], None]:
        def fn(_m: nn.Module, args: tuple[Tensor, ...]) -> None:
            assert mask is not None
            x = args[0].detach().abs()
            x = x.reshape(-1, x.shape[-1])[mask.reshape(-1).bool()].sum(0)
            sums[i] = x if sums[i] is None else sums[i] + x

        return fn

    handles = [m.register_forward_pre_hook(hook(i)) for i, m in enumerate(mods)]
    try:
        with torch.no_grad():
            for b in batches:
                mask = b["attention_mask"]
                count += int(mask.sum())
                model(**b)
    finally:
        for h in handles:
            h.remove()
    return [s / max(count, 1) for s in sums]  # type: ignore[operator]
