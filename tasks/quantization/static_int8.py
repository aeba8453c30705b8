"""Static int8 in QDQ format, activation ranges calibrated on real text."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import onnx
from pydantic import Field, model_validator

from slimline.tasks.base import LAX, TaskError
from slimline.tasks.graph import read_meta, tokenizer_of, with_past
from slimline.tasks.inputs import encode
from slimline.tasks.quantization import ORT_EXTRA_OPTIONS
from slimline.tasks.quantization._mixed import Int8Config, auto_exclusions
from slimline.tasks.quantization._smoothquant import smooth_file
from slimline.tasks.techniques import register_technique

PERCENTILE = 99.999  # ORT's default for calibration: percentile


class StaticInt8Config(Int8Config):
    """Static int8 in QDQ format, activation ranges calibrated on real text."""

    version: ClassVar = 2  # 2: entropy calibration searches thresholds (it equalled minmax before)
    list_fields: ClassVar = Int8Config.list_fields | {"op_types"}
    method: Literal["static-int8"] = "static-int8"
    calibration: Literal["minmax", "entropy", "percentile"] = "minmax"
    per_channel: bool = True
    reduce_range: bool = False
    samples: int = Field(default=64, ge=1)
    # calibration: percentile keeps this share of each tensor's |values| in range (ORT's default).
    percentile: float = Field(default=PERCENTILE, gt=90, le=100)
    # Matrix products and embedding lookups only: quantizing every op also quantizes the additive
    # attention mask, whose range (about -3.4e38 to 0) leaves no resolution for real scores
    # (MiniLM fidelity 0.35 that way, 0.94 this way).
    op_types: Annotated[tuple[str, ...], LAX] = ("MatMul", "Gemm", "Gather")
    # Leave activation x activation products (attention scores) in float, as dynamic int8 does.
    weight_matmuls_only: bool = True
    # u8 activations (asymmetric) feed x86's u8 x s8 kernels; s8 (with activation_symmetric) is what
    # ORT documents for QDQ on x86-64: no u8 x s8 saturation on CPUs without VNNI.
    activations: Literal["u8", "s8"] = "u8"
    activation_symmetric: bool = False
    # One QuantizeLinear/DequantizeLinear pair per consuming node instead of one per tensor: each
    # consumer's input can then be fused with that consumer (ORT's DedicatedQDQPair).
    dedicated_qdq: bool = False
    # SmoothQuant's alpha (tasks/quantization/_smoothquant.py): outlier channels of each weight
    # product's input migrate into its weights before calibration. None: off.
    smooth: float | None = Field(default=None, gt=0, le=1)
    later_fields: ClassVar = Int8Config.later_fields | {
        "percentile",
        "activations",
        "activation_symmetric",
        "dedicated_qdq",
        "smooth",
    }

    @model_validator(mode="after")
    def _percentile_needs_its_method(self) -> StaticInt8Config:
        if self.percentile != PERCENTILE and self.calibration != "percentile":
            raise ValueError("percentile is read by calibration: percentile only")
        return self

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
        self.feeds = [with_past(encode(tok, [t], 1, seq, names), meta) for t in texts]
        self._feeds: Iterator[dict[str, np.ndarray]] = iter(self.feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def _entropy_ranges(model: Path, reader: _TextReader, op_types: list[str], cache: Path) -> None:
    """Write entropy-calibrated ranges where quantize_static reads its calibration cache.

    quantize_static builds its entropy calibrator with 128 histogram bins into 128 quantized bins
    (onnxruntime 1.31.1, quantization/calibrate.py), which leaves one candidate threshold, the whole
    range: entropy then equals minmax. TensorRT's 2048 bins into 128 give the search its candidates.
    """
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator, save_tensors_data

    with tempfile.TemporaryDirectory(dir=cache.parent) as tmp:
        calibrator = create_calibrator(
            model,
            op_types,
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=CalibrationMethod.Entropy,
            providers=["CPUExecutionProvider"],
            extra_options={"num_bins": 2048, "num_quantized_bins": 128},
        )
        calibrator.collect_data(reader)
        save_tensors_data(calibrator.compute_data(), cache)


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
    reader = _TextReader(src, calibration[: cfg.samples], max_length)
    source = src
    if cfg.smooth is not None:
        source = dst.parent / "smoothed.onnx"
        where = smooth_file(src, source, reader.feeds, cfg.smooth)
        extra["smoothquant"] = {
            "alpha": cfg.smooth,
            "inputs": len(where),
            "folded": list(where.values()).count("folded"),
        }
    # Fused com.microsoft ops have no ONNX shape inference: without symbolic inference first,
    # the QDQ quantizer cannot type their outputs and silently leaves activations in float.
    inferred = dst.parent / "inferred.onnx"
    quant_pre_process(str(source), str(inferred), skip_optimization=True, auto_merge=True)
    method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[cfg.calibration]
    cache = None
    if cfg.calibration == "entropy":
        cache = dst.parent / "ranges.json"
        _entropy_ranges(inferred, reader, list(cfg.op_types), cache)
    quantize_static(
        str(inferred),
        str(dst),
        reader,
        quant_format=QuantFormat.QDQ,
        per_channel=cfg.per_channel,
        reduce_range=cfg.reduce_range,
        activation_type=QuantType.QInt8 if cfg.activations == "s8" else QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=method,
        op_types_to_quantize=list(cfg.op_types),
        nodes_to_exclude=[
            *cfg.nodes_to_exclude,
            *keep,
            *(_activation_matmuls(src) if cfg.weight_matmuls_only else []),
        ],
        calibration_providers=["CPUExecutionProvider"],
        calibration_cache_path=cache,
        extra_options={
            **ORT_EXTRA_OPTIONS,
            "ActivationSymmetric": cfg.activation_symmetric,
            "DedicatedQDQPair": cfg.dedicated_qdq,
            "CalibPercentile": cfg.percentile,
        },
    )
    inferred.unlink()
    if cache is not None:
        cache.unlink()
    if source != src:
        for f in source.parent.glob(source.name + "*"):  # the smoothed graph and any external data
            f.unlink()
    return extra
