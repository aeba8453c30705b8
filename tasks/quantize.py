"""ONNX Runtime quantization: dynamic int8, static int8 (QDQ), fp16 and int4 weight-only.

Every method reads a (preferably optimised) graph and writes a new folder with the quantized
graph plus the tokenizer and meta.json, so evaluation never needs the torch model.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
from pydantic import Field

from tasks.base import Record, SkipVariant, StepConfig, TaskError, atomic_dir
from tasks.export import ONNX_NAME, copy_sidecars, encode, onnx_size_bytes, read_meta
from tasks.load import load_tokenizer
from tasks.runtime import cuda_usable

# The fused com.microsoft ops defeat ONNX shape inference; without a default tensor type the
# quantizer then fails on tensors whose type it cannot infer (see DESIGN.md).
_EXTRA = {"DefaultTensorType": onnx.TensorProto.FLOAT}


class DynamicInt8Config(StepConfig):
    """Dynamic int8: weights quantized offline, activations at run time."""

    method: Literal["dynamic-int8"] = "dynamic-int8"
    per_channel: bool = False
    reduce_range: bool = False
    nodes_to_exclude: tuple[str, ...] = ()


class StaticInt8Config(StepConfig):
    """Static int8 in QDQ format, activation ranges calibrated on real text."""

    method: Literal["static-int8"] = "static-int8"
    calibration: Literal["minmax", "entropy", "percentile"] = "minmax"
    per_channel: bool = True
    reduce_range: bool = False
    samples: int = Field(default=64, ge=1)
    # Matrix products and embedding lookups only: quantizing every op also quantizes the additive
    # attention mask, whose range (about -3.4e38 to 0) leaves no resolution for real scores
    # (MiniLM fidelity 0.35 that way, 0.94 this way).
    op_types: tuple[str, ...] = ("MatMul", "Gemm", "Gather")
    # Leave activation x activation products (attention scores) in float, as dynamic int8 does.
    weight_matmuls_only: bool = True
    nodes_to_exclude: tuple[str, ...] = ()


class FP16Config(StepConfig):
    """Half precision weights and activations (CUDA only: CPU kernels for fp16 are slower than fp32)."""

    method: Literal["fp16"] = "fp16"
    keep_io_types: bool = True


class Int4Config(StepConfig):
    """Weight-only int4 of MatMul weights (MatMulNBits), blockwise."""

    method: Literal["int4-weight-only"] = "int4-weight-only"
    block_size: int = Field(default=32, ge=16)
    symmetric: bool = True
    accuracy_level: int | None = Field(default=None, ge=0, le=4)


QuantizeConfig = DynamicInt8Config | StaticInt8Config | FP16Config | Int4Config


class _TextReader:
    """ONNX Runtime CalibrationDataReader over real text, one sentence per feed.

    Every feed has the same length (the longest sentence, capped at max_length): the entropy and
    percentile calibrators stack activations across feeds and need identical shapes.
    """

    def __init__(self, onnx_path: Path, texts: list[str], max_length: int) -> None:
        meta = read_meta(onnx_path)
        tok = load_tokenizer(str(Path(onnx_path).parent))
        seq = min(max_length, max(len(tok(t)["input_ids"]) for t in texts))
        self._feeds: Iterator[dict[str, np.ndarray]] = iter(
            [encode(tok, [t], 1, seq, meta["inputs"]) for t in texts]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def op_counts(onnx_path: Path) -> dict[str, int]:
    """Operator histogram of a graph (without loading external weights)."""
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return dict(Counter(n.op_type for n in graph.node))


def _dynamic(cfg: DynamicInt8Config, src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(src),
        str(dst),
        per_channel=cfg.per_channel,
        reduce_range=cfg.reduce_range,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=list(cfg.nodes_to_exclude),
        extra_options=dict(_EXTRA),
    )


def _static(cfg: StaticInt8Config, src: Path, dst: Path, texts: list[str], max_length: int) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if not texts:
        raise TaskError("static-int8 needs calibration text")
    from onnxruntime.quantization.shape_inference import quant_pre_process

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
        _TextReader(src, texts[: cfg.samples], max_length),
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
            *(_activation_matmuls(src) if cfg.weight_matmuls_only else []),
        ],
        calibration_providers=["CPUExecutionProvider"],
        extra_options=dict(_EXTRA),
    )
    inferred.unlink()


def _activation_matmuls(onnx_path: Path) -> list[str]:
    """Names of MatMul nodes with no constant input (e.g. Q x K^T and P x V in attention)."""
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    consts = {i.name for i in graph.initializer} | {
        o for n in graph.node if n.op_type == "Constant" for o in n.output
    }
    return [n.name for n in graph.node if n.op_type == "MatMul" and not consts.intersection(n.input)]


def _fp16(cfg: FP16Config, src: Path, dst: Path, device: str) -> None:
    if device != "cuda" or not cuda_usable():
        raise SkipVariant("fp16 needs a CUDA device: ONNX Runtime's CPU provider runs fp16 slower than fp32")
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(src)))
    model.convert_float_to_float16(keep_io_types=cfg.keep_io_types)
    model.save_model_to_file(str(dst))


def _int4(cfg: Int4Config, src: Path, dst: Path) -> None:
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


def _private_input(src: Path, where: Path) -> Path:
    """Link the source graph's folder into `where` and return the graph there.

    ORT's quantizers write scratch files next to their input (`model-inferred.onnx`), so two
    quantizations of one graph running at once, in two Ray workers, would trample each other.
    """
    where.mkdir(parents=True)
    for f in src.parent.iterdir():
        if f.is_file():
            try:
                os.link(f, where / f.name)
            except OSError:  # another filesystem, or no hard links there
                shutil.copy2(f, where / f.name)
    return where / src.name


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """ORT's quantizer warns on the root logger ("consider pre-processing"); we already do what it asks."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def apply(
    cfg: QuantizeConfig,
    onnx_path: Path,
    out_dir: Path,
    *,
    calibration: list[str] | None = None,
    device: str = "cpu",
    max_length: int = 128,
) -> Record:
    """Quantize the graph at `onnx_path` into `out_dir/model.onnx`."""
    src = Path(onnx_path)
    read_meta(src)  # fail early, with a clear error, on a folder that is not a slimline graph
    with atomic_dir(Path(out_dir)) as tmp, _quiet_root_logger():
        dst = tmp / ONNX_NAME
        graph = _private_input(src, tmp / "input")
        if isinstance(cfg, DynamicInt8Config):
            _dynamic(cfg, graph, dst)
        elif isinstance(cfg, StaticInt8Config):
            _static(cfg, graph, dst, calibration or [], max_length)
        elif isinstance(cfg, FP16Config):
            _fp16(cfg, graph, dst, device)
        else:
            _int4(cfg, graph, dst)
        shutil.rmtree(tmp / "input")
        copy_sidecars(src.parent, tmp)
    out = Path(out_dir) / ONNX_NAME
    before, after = onnx_size_bytes(src), onnx_size_bytes(out)
    return {
        "stage": "quantize",
        "method": cfg.method,
        "config": cfg.to_json(),
        "path": str(out),
        "ops": op_counts(out),
        "size_mb": after / 1e6,
        "compression": before / after if after else float("nan"),
    }


def describe(cfg: Any) -> str:
    """A short human label for a technique config: its method and the fields set away from defaults."""
    extras = [
        f"{k}={v}" for k, v in cfg.model_dump(mode="json", exclude_defaults=True).items() if k != "method"
    ]
    return f"{cfg.method}({', '.join(extras)})" if extras else cfg.method
