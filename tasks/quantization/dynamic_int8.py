"""Dynamic int8: weights quantized offline, activations at run time."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from slimline.tasks.quantization import ORT_EXTRA_OPTIONS
from slimline.tasks.quantization._mixed import Int8Config, auto_exclusions
from slimline.tasks.techniques import register_technique


class DynamicInt8Config(Int8Config):
    """Dynamic int8: weights quantized offline, activations at run time."""

    method: Literal["dynamic-int8"] = "dynamic-int8"
    per_channel: bool = False
    reduce_range: bool = False
    # Quantize the activation x activation products too (attention's QK^T and softmax x V), each
    # input by its own DynamicQuantizeLinear: what Optimum's presets do. Off: they stay in float.
    attention: bool = False
    later_fields: ClassVar = Int8Config.later_fields | {"attention"}


@register_technique(DynamicInt8Config)
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
        extra_options={**ORT_EXTRA_OPTIONS, "MatMulConstBOnly": not cfg.attention},
    )
    return extra
