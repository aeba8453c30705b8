"""Weight-only int4 of MatMul weights (MatMulNBits), blockwise."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import onnx
from pydantic import Field, ValidationInfo, field_validator

from slimline.tasks.base import SkipVariant
from slimline.tasks.quantization import QuantizeConfig
from slimline.tasks.techniques import register_technique


class WeightOnlyConfig(QuantizeConfig):
    """Weight-only quantization of MatMul weights to MatMulNBits, blockwise (int4, int8): the
    settings `quantize_weights` reads. Each method declares them again with its own defaults (a
    label lists a config's own fields first, in their order, and variant ids hash labels)."""

    bits: ClassVar[int]
    block_size: int  # weights per block along K, each block with its own scale
    symmetric: bool  # zero point fixed at 2^(bits-1), or fitted per block
    accuracy_level: int | None  # 4: int8 activations inside MatMulNBits; None: fp32 activations


class Int4Config(WeightOnlyConfig):
    """Weight-only int4 of MatMul weights (MatMulNBits), blockwise."""

    bits: ClassVar[int] = 4
    method: Literal["int4-weight-only"] = "int4-weight-only"
    block_size: int = Field(default=32, ge=16)
    symmetric: bool = True
    # 4: activations in int8 inside MatMulNBits (fastest on CPU); None: fp32 activations.
    accuracy_level: int | None = Field(default=None, ge=0, le=4)
    # rtn: round each block to its nearest levels. hqq: Half-Quadratic Quantization fits each
    # block's scale and zero point to the weights (no data needed); on SmolLM2-135M it keeps far
    # more of the model (top-1 agreement 0.76 against 0.52 at block 32). It is asymmetric, and its
    # float zero points take a slow MatMulNBits path on CPU (SmolLM2: 9 against 226 tokens/s).
    # affine: each block keeps a float offset (its minimum), taken out of the kernel as a small
    # correction MatMul (tasks/quantization/_affine.py), so the fast integer kernel still runs.
    # It reproduces weights that were themselves 4-bit affine, such as a GGUF's Q4_1 tensors,
    # exactly at block_size 32. It is asymmetric by construction: `symmetric` is not read.
    algorithm: Literal["rtn", "hqq", "affine"] = "rtn"
    # Bits of the MatMul that writes the logits (the LM head), for affine: its error lands
    # straight on every next-token choice. 8 stores it symmetric, per block, as a GGUF's Q8_0
    # head is stored (SmolLM2's is), which reproduces such a head exactly.
    head_bits: Literal[4, 8] = 4

    @field_validator("head_bits")
    @classmethod
    def _head_bits_need_affine(cls, value: int, info: ValidationInfo) -> int:
        if value != cls.bits and info.data.get("algorithm") != "affine":
            raise ValueError("only algorithm: affine reads head_bits")
        return value

    def to_json(self) -> dict[str, Any]:
        # Left out when unset: the stage ids of every int4 graph from before head_bits stay.
        data = self.model_dump(mode="json")
        if self.head_bits == self.bits:
            data.pop("head_bits")
        return data


def quantize_weights(cfg: WeightOnlyConfig, src: Path, dst: Path, *, hqq: bool = False) -> None:
    """Quantize the constant MatMul weights of `src` to `cfg.bits` bits into `dst` (MatMulNBits),
    rounding each block to its nearest levels, or (`hqq`) fitting its scale and zero point."""
    from onnxruntime.quantization import QuantFormat
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        HQQWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    algo = HQQWeightOnlyQuantConfig(block_size=cfg.block_size, bits=cfg.bits) if hqq else None
    quant = MatMulNBitsQuantizer(
        onnx.load(str(src)),
        bits=cfg.bits,
        block_size=cfg.block_size,
        is_symmetric=cfg.symmetric,
        accuracy_level=cfg.accuracy_level,
        quant_format=QuantFormat.QOperator,
        algo_config=algo,
    )
    quant.process()
    if not any(n.op_type == "MatMulNBits" for n in quant.model.model.graph.node):
        raise SkipVariant(f"{cfg.method}: the graph has no MatMul with constant weights to quantize")
    quant.model.save_model_to_file(str(dst), use_external_data_format=False)


def _quantize_affine(cfg: Int4Config, src: Path, dst: Path) -> None:
    from slimline.tasks.quantization._affine import output_matmuls, quantize_affine

    model = onnx.load(str(src))
    heads = output_matmuls(model)
    # An 8-bit head is symmetric: as exact as it gets for a GGUF's Q8_0 head, and no correction.
    head = {name: 8 for name in heads} if cfg.head_bits == 8 else {}
    level = cfg.accuracy_level
    if not quantize_affine(
        model, bits=cfg.bits, block_size=cfg.block_size, accuracy_level=level, symmetric_bits=head
    ):
        raise SkipVariant(f"{cfg.method}: the graph has no MatMul with constant weights to quantize")
    onnx.save(model, str(dst))


@register_technique(Int4Config)
def apply(cfg: Int4Config, src: Path, dst: Path, **_: object) -> None:
    """Quantize the constant MatMul weights of `src` to 4 bits into `dst`."""
    if cfg.algorithm == "affine":
        _quantize_affine(cfg, src, dst)
    else:
        quantize_weights(cfg, src, dst, hqq=cfg.algorithm == "hqq")
