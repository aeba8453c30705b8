"""Sensitivity-guided mixed precision for the int8 techniques: `exclude: {auto: k}` keeps the k
weight MatMuls that int8 hurts most in fp32 (the measurement is tasks.sensitivity's)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from slimline.tasks.base import LAX, TaskError
from slimline.tasks.quantization import QuantizeConfig
from slimline.tasks.sensitivity import matmul_sensitivity, most_sensitive


class AutoExclude(BaseModel):
    """`{auto: k}`: how many of the most sensitive weight MatMuls stay in fp32."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    auto: int = Field(ge=0)


class Int8Config(QuantizeConfig):
    """ONNX Runtime int8 that quantizes activations too (dynamic, static): the settings they share,
    and `exclude: {auto: k}`, which keeps the k most sensitive MatMuls in fp32."""

    list_fields: ClassVar[frozenset[str]] = frozenset({"nodes_to_exclude"})
    later_fields: ClassVar[frozenset[str]] = frozenset({"exclude"})
    # Each method declares these two again with its own default (a label lists a config's own
    # fields first, in their order, and variant ids hash labels).
    per_channel: bool  # a weight scale per output channel, not per tensor
    reduce_range: bool  # 7-bit weights: no u8 x s8 overflow on CPUs without VNNI
    nodes_to_exclude: Annotated[tuple[str, ...], LAX] = ()  # node names left in float
    exclude: AutoExclude | None = None

    def sensitivity_op_types(self) -> tuple[str, ...]:
        """The weight ops `exclude: {auto: k}` measures: those this method quantizes (MatMul)."""
        return ("MatMul",)

    def label(self) -> str:
        base = super().label()
        if self.exclude is None:
            return base
        return base.replace(f"exclude={{'auto': {self.exclude.auto}}}", f"exclude=auto{self.exclude.auto}")

    def needs_calibration(self) -> bool:
        # The sensitivities are measured on the calibration text.
        return self.exclude is not None and self.exclude.auto > 0


def auto_exclusions(
    cfg: Int8Config, src: Path, calibration: list[str] | None, max_length: int
) -> tuple[list[str], dict[str, Any]]:
    """The node names to keep in fp32 and the record fields that say why (table and choice)."""
    if cfg.exclude is None:
        return [], {}
    if cfg.exclude.auto == 0:
        return [], {"excluded": []}
    if not calibration:
        raise TaskError(f"{cfg.method}: exclude: {{auto: ...}} needs calibration text")
    table = matmul_sensitivity(
        src,
        calibration,
        max_length,
        per_channel=cfg.per_channel,
        reduce_range=cfg.reduce_range,
        op_types=cfg.sensitivity_op_types(),
    )
    chosen = most_sensitive(table, cfg.exclude.auto)
    return chosen, {"sensitivity": table, "excluded": chosen}
