"""Sensitivity-guided mixed precision for the int8 techniques: `exclude: {auto: k}` keeps the k
weight MatMuls that int8 hurts most in fp32 (the measurement is tasks.sensitivity's)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar

import onnx
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

    list_fields: ClassVar[frozenset[str]] = frozenset({"nodes_to_exclude", "float_after"})
    later_fields: ClassVar[frozenset[str]] = frozenset({"exclude", "float_after"})
    # Each method declares these two again with its own default (a label lists a config's own
    # fields first, in their order, and variant ids hash labels).
    per_channel: bool  # a weight scale per output channel, not per tensor
    reduce_range: bool  # 7-bit weights: no u8 x s8 overflow on CPUs without VNNI
    nodes_to_exclude: Annotated[tuple[str, ...], LAX] = ()  # node names left in float
    exclude: AutoExclude | None = None
    # Weight products whose input an op of these types makes stay in float, e.g. [BiasGelu, Gelu,
    # FastGelu] for the FFN down projections: static int8 on all-MiniLM-L6-v2 keeps 0.94 of fp32's
    # fidelity with them quantized, 0.99 with them in float (GELU outputs are heavy-tailed, and
    # one calibrated range per tensor gives them coarse steps).
    float_after: Annotated[tuple[str, ...], LAX] = ()

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


def after_ops(src: Path, op_types: tuple[str, ...]) -> list[str]:
    """Names of the weight MatMuls whose input is made by an op of `op_types` (`float_after`)."""
    if not op_types:
        return []
    graph = onnx.load(str(src), load_external_data=False).graph
    made_by = {o: n.op_type for n in graph.node for o in n.output}
    weights = {t.name for t in graph.initializer}
    return [
        n.name
        for n in graph.node
        if n.op_type == "MatMul" and n.input[1] in weights and made_by.get(n.input[0]) in op_types
    ]


def auto_exclusions(
    cfg: Int8Config, src: Path, calibration: list[str] | None, max_length: int
) -> tuple[list[str], dict[str, Any]]:
    """The node names to keep in fp32 and the record fields that say why (table and choice);
    those `float_after` names come first."""
    after = after_ops(src, cfg.float_after)
    keep, extra = _auto(cfg, src, calibration, max_length)
    if after:
        extra["float_after"] = after
    return [*after, *(k for k in keep if k not in after)], extra


def _auto(
    cfg: Int8Config, src: Path, calibration: list[str] | None, max_length: int
) -> tuple[list[str], dict[str, Any]]:
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
