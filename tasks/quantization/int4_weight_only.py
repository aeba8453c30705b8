"""Weight-only int4 of MatMul weights (MatMulNBits), blockwise."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import onnx
from pydantic import Field

from ..base import SkipVariant, TechniqueConfig


class Int4Config(TechniqueConfig):
    """Weight-only int4 of MatMul weights (MatMulNBits), blockwise."""

    stage: ClassVar = "quantize"
    method: Literal["int4-weight-only"] = "int4-weight-only"
    block_size: int = Field(default=32, ge=16)
    symmetric: bool = True
    accuracy_level: int | None = Field(default=None, ge=0, le=4)


CONFIG = Int4Config


def apply(cfg: Int4Config, src: Path, dst: Path, **_: object) -> None:
    """Quantize the constant MatMul weights of `src` to 4 bits into `dst`."""
    from onnxruntime.quantization import QuantFormat
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quant = MatMulNBitsQuantizer(
        onnx.load(str(src)),
        bits=4,
        block_size=cfg.block_size,
        is_symmetric=cfg.symmetric,
        accuracy_level=cfg.accuracy_level,
        quant_format=QuantFormat.QOperator,
    )
    quant.process()
    if not any(n.op_type == "MatMulNBits" for n in quant.model.model.graph.node):
        raise SkipVariant("int4-weight-only: the graph has no MatMul with constant weights to quantize")
    quant.model.save_model_to_file(str(dst), use_external_data_format=False)
