"""Sensitivity-guided mixed precision for the int8 techniques: `exclude: {auto: k}` keeps the k
weight MatMuls that int8 hurts most in fp32 (the measurement is tasks.sensitivity's)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from slimline.tasks.base import TaskError, TechniqueConfig
from slimline.tasks.sensitivity import matmul_sensitivity, most_sensitive


class AutoExclude(BaseModel):
    """`{auto: k}`: how many of the most sensitive weight MatMuls stay in fp32."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    auto: int = Field(ge=0)


class MixedPrecision(TechniqueConfig):
    """An int8 config that may keep its most sensitive MatMuls in fp32."""

    exclude: AutoExclude | None = None

    def to_json(self) -> dict[str, Any]:
        # Left out when unset: the stage ids of every int8 graph before `exclude` existed stay.
        data = self.model_dump(mode="json")
        if self.exclude is None:
            data.pop("exclude")
        return data

    def label(self) -> str:
        base = super().label()
        if self.exclude is None:
            return base
        return base.replace(f"exclude={{'auto': {self.exclude.auto}}}", f"exclude=auto{self.exclude.auto}")

    def needs_calibration(self) -> bool:
        # The sensitivities are measured on the calibration text.
        return self.exclude is not None and self.exclude.auto > 0


def auto_exclusions(
    cfg: MixedPrecision, src: Path, calibration: list[str] | None, max_length: int
) -> tuple[list[str], dict[str, Any]]:
    """The node names to keep in fp32 and the record fields that say why (table and choice)."""
    if cfg.exclude is None:
        return [], {}
    if cfg.exclude.auto == 0:
        return [], {"excluded": []}
    if not calibration:
        raise TaskError(f"{cfg.method}: exclude: {{auto: ...}} needs calibration text")
    per_channel = bool(getattr(cfg, "per_channel", False))
    reduce_range = bool(getattr(cfg, "reduce_range", False))
    # Static int8 quantizes Gemm too (its op_types say so); dynamic int8 only MatMul.
    op_types = tuple(getattr(cfg, "op_types", ("MatMul",)))
    table = matmul_sensitivity(
        src, calibration, max_length, per_channel=per_channel, reduce_range=reduce_range, op_types=op_types
    )
    chosen = most_sensitive(table, cfg.exclude.auto)
    return chosen, {"sensitivity": table, "excluded": chosen}
