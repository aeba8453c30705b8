"""Unstructured magnitude pruning of the block weights (global or per layer), or N:M sparsity."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from slimline.tasks import _sparsity as sp
from slimline.tasks import _structural as st
from slimline.tasks.base import Record, TaskError, TechniqueConfig
from slimline.tasks.families import block_linears, detect
from slimline.tasks.techniques import register_technique


class MagnitudeConfig(TechniqueConfig):
    """Unstructured magnitude pruning of the block weights; `pattern: "2:4"` gives N:M sparsity."""

    stage: ClassVar = "prune"
    method: Literal["magnitude"] = "magnitude"
    sparsity: float | None = Field(default=None, gt=0.0, lt=1.0)
    pattern: str | None = Field(default=None, pattern=r"^\d+:\d+$")
    scope: Literal["global", "layer"] = "global"

    @model_validator(mode="after")
    def _consistent(self) -> MagnitudeConfig:
        if self.pattern:
            n, m = self.n_m
            if not 0 < n < m:
                raise ValueError(f"pattern {self.pattern!r}: expected N:M with 0 < N < M")
            if self.sparsity is not None and abs(self.sparsity - (1 - n / m)) > 1e-9:
                raise ValueError(
                    f"sparsity {self.sparsity} contradicts pattern {self.pattern} ({1 - n / m:g})"
                )
        return self

    @property
    def n_m(self) -> tuple[int, int]:
        """(N, M) of the pattern."""
        n, m = (int(x) for x in str(self.pattern).split(":"))
        return n, m

    @property
    def target_sparsity(self) -> float:
        """The sparsity the result must have."""
        if self.pattern:
            n, m = self.n_m
            return 1 - n / m
        return 0.5 if self.sparsity is None else self.sparsity


def prune_magnitude(model: nn.Module, cfg: MagnitudeConfig) -> float:
    """Zero block weights in place; returns the achieved sparsity over those weights."""
    mods = [m for _, m in block_linears(model, detect(model))]
    with torch.no_grad():
        if cfg.pattern:
            n, m = cfg.n_m
            for mod in mods:
                w = st.out_major(mod)
                if w.shape[1] % m:
                    raise TaskError(
                        f"N:M {cfg.pattern}: a weight has input width {w.shape[1]}, not divisible by {m}"
                    )
                mask = sp.nm_mask(w, n, m)
                mod.weight.mul_(mask.t() if st.is_conv1d(mod) else mask)
        elif cfg.scope == "global":
            masks = sp.global_magnitude_masks([x.weight for x in mods], cfg.target_sparsity)
            for mod, mask in zip(mods, masks, strict=True):
                mod.weight.mul_(mask)
        else:
            for mod in mods:
                mod.weight.mul_(sp.magnitude_mask(mod.weight, cfg.target_sparsity))
    return sp.sparsity_of([x.weight for x in mods])


@register_technique(MagnitudeConfig)
def apply(cfg: MagnitudeConfig, model: nn.Module, batches: list[dict[str, Tensor]] | None = None) -> Record:
    """Prune in place; the record has the target and the achieved sparsity."""
    return {"sparsity_target": cfg.target_sparsity, "sparsity": prune_magnitude(model, cfg)}
