"""Dynamic int8: weights quantized offline, activations at run time."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar, Literal

from ..base import LAX, TechniqueConfig
from . import ORT_EXTRA_OPTIONS


class DynamicInt8Config(TechniqueConfig):
    """Dynamic int8: weights quantized offline, activations at run time."""

    stage: ClassVar = "quantize"
    list_fields: ClassVar = frozenset({"nodes_to_exclude"})
    method: Literal["dynamic-int8"] = "dynamic-int8"
    per_channel: bool = False
    reduce_range: bool = False
    nodes_to_exclude: Annotated[tuple[str, ...], LAX] = ()


CONFIG = DynamicInt8Config


def apply(cfg: DynamicInt8Config, src: Path, dst: Path, **_: object) -> None:
    """Quantize the MatMul/Gemm weights of `src` to int8 into `dst`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(src),
        str(dst),
        per_channel=cfg.per_channel,
        reduce_range=cfg.reduce_range,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=list(cfg.nodes_to_exclude),
        extra_options=dict(ORT_EXTRA_OPTIONS),
    )
