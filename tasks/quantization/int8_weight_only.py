"""Weight-only int8 of MatMul weights (MatMulNBits with 8 bits), blockwise; activations stay fp32.

For LLMs this is the int8 that keeps quality: dynamic int8 also quantizes activations, per
tensor, and the few huge activation channels of decoders (SmolLM2's among them) then take the
whole int8 range. Decoding reads 4× fewer weight bytes than fp32.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from slimline.tasks.quantization.int4_weight_only import WeightOnlyConfig, quantize_weights
from slimline.tasks.techniques import register_technique


class Int8WeightOnlyConfig(WeightOnlyConfig):
    """Weight-only int8 of MatMul weights (MatMulNBits), blockwise."""

    bits: ClassVar[int] = 8
    method: Literal["int8-weight-only"] = "int8-weight-only"
    block_size: int = Field(default=32, ge=16)
    symmetric: bool = True
    accuracy_level: int | None = Field(default=None, ge=0, le=4)


@register_technique(Int8WeightOnlyConfig)
def apply(cfg: Int8WeightOnlyConfig, src: Path, dst: Path, **_: object) -> None:
    """Quantize the constant MatMul weights of `src` to 8 bits into `dst`."""
    quantize_weights(cfg, src, dst)
