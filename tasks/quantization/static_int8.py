"""Static int8 in QDQ format, activation ranges calibrated on real text."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import onnx
from pydantic import Field

from slimline.tasks.base import LAX, TaskError
from slimline.tasks.graph import read_meta, tokenizer_of, with_past
from slimline.tasks.inputs import encode
from slimline.tasks.quantization import ORT_EXTRA_OPTIONS
from slimline.tasks.quantization._mixed import Int8Config, auto_exclusions
from slimline.tasks.techniques import register_technique


class StaticInt8Config(Int8Config):
    """Static int8 in QDQ format, activation ranges calibrated on real text."""

    list_fields: ClassVar = Int8Config.list_fields | {"op_types"}
    method: Literal["static-int8"] = "static-int8"
    calibration: Literal["minmax", "entropy", "percentile"] = "minmax"
    per_channel: bool = True
    reduce_range: bool = False
    samples: int = Field(default=64, ge=1)
    # Matrix products and embedding lookups only: quantizing every op also quantizes the additive
    # attention mask, whose range (about -3.4e38 to 0) leaves no resolution for real scores
    # (MiniLM fidelity 0.35 that way, 0.94 this way).
    op_types: Annotated[tuple[str, ...], LAX] = ("MatMul", "Gemm", "Gather")
    # Leave activation x activation products (attention scores) in float, as dynamic int8 does.
    weight_matmuls_only: bool = True

    def needs_calibration(self) -> bool:
        return True

    def sensitivity_op_types(self) -> tuple[str, ...]:
        return self.op_types  # Gemm too, when its op_types say so


class _TextReader:
    """ONNX Runtime CalibrationDataReader over real text, one sentence per feed.

    Every feed has the same length (the longest sentence, capped at max_length): the entropy and
    percentile calibrators stack activations across feeds and need identical shapes.
    """

    def __init__(self, onnx_path: Path, texts: list[str], max_length: int) -> None:
        meta = read_meta(onnx_path)
        names = meta["inputs"]
        tok = tokenizer_of(onnx_path)
        seq = min(max_length, max(len(tok(t)["input_ids"]) for t in texts))  # type: ignore[operator]
        self._feeds: Iterator[dict[str, np.ndarray]] = iter(
            [with_past(encode(tok, [t], 1, seq, names), meta) for t in texts]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def _activation_matmuls(onnx_path: Path) -> list[str]:
    """Names of MatMul nodes with no constant input (e.g. Q x K^T and P x V in attention)."""
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    consts = {i.name for i in graph.initializer} | {
        o for n in graph.node if n.op_type == "Constant" for o in n.output
    }
    return [n.name for n in graph.node if n.op_type == "MatMul" and not consts.intersection(n.input)]


@register_technique(StaticInt8Config)
def apply(
    cfg: StaticInt8Config,
    src: Path,
    dst: Path,
    *,
    calibration: list[str] | None,
    max_length: int,
    **_: object,
) -> dict[str, Any]:
    """Calibrate activation ranges on `calibration` text and write a QDQ int8 graph to `dst`
    (the most sensitive weight MatMuls kept in fp32 with `exclude: {auto: k}`, measured with the
    dynamic-int8 proxy of tasks.sensitivity); returns the sensitivity table, if any."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not calibration:
        raise TaskError("static-int8 needs calibration text")
    keep, extra = auto_exclusions(cfg, src, calibration, max_length)
    # Fused com.microsoft ops have no ONNX shape inference: without symbolic inference first,
    # the QDQ quantizer cannot type their outputs and silently leaves activations in float.
    inferred = dst.parent / "inferred.onnx"
    quant_pre_process(str(src), str(inferred), skip_optimization=True, auto_merge=True)
    method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[cfg.calibration]
    quantize_static(
        str(inferred),
        str(dst),
        _TextReader(src, calibration[: cfg.samples], max_length),
        quant_format=QuantFormat.QDQ,
        per_channel=cfg.per_channel,
        reduce_range=cfg.reduce_range,
        # u8 activations with s8 weights is the combination x86 int8 kernels are built for.
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=method,
        op_types_to_quantize=list(cfg.op_types),
        nodes_to_exclude=[
            *cfg.nodes_to_exclude,
            *keep,
            *(_activation_matmuls(src) if cfg.weight_matmuls_only else []),
        ],
        calibration_providers=["CPUExecutionProvider"],
        extra_options=dict(ORT_EXTRA_OPTIONS),
    )
    inferred.unlink()
    return extra
