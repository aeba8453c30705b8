"""Dynamic int8: weights quantized offline, activations at run time."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from slimline.tasks.base import LAX
from slimline.tasks.quantization import ORT_EXTRA_OPTIONS
from slimline.tasks.quantization._mixed import MixedPrecision, auto_exclusions


class DynamicInt8Config(MixedPrecision):
    """Dynamic int8: weights quantized offline, activations at run time."""

    stage: ClassVar = "quantize"
    list_fields: ClassVar = frozenset({"nodes_to_exclude"})
    method: Literal["dynamic-int8"] = "dynamic-int8"
    per_channel: bool = False
    reduce_range: bool = False
    nodes_to_exclude: Annotated[tuple[str, ...], LAX] = ()


CONFIG = DynamicInt8Config


def apply(
    cfg: DynamicInt8Config,
    src: Path,
    dst: Path,
    *,
    calibration: list[str] | None = None,
    max_length: int = 128,
    **_: object,
) -> dict[str, Any]:
    """Quantize the MatMul/Gemm weights of `src` to int8 into `dst` (the most sensitive kept in
    fp32 with `exclude: {auto: k}`); returns the sensitivity table and the choice, if any."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    keep, extra = auto_exclusions(cfg, src, calibration, max_length)

    quantize_dynamic(
        str(src),
        str(dst),
        per_channel=cfg.per_channel,
        reduce_range=cfg.reduce_range,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=[*cfg.nodes_to_exclude, *keep],
        extra_options=dict(ORT_EXTRA_OPTIONS),
    )
    return extra
